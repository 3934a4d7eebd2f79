import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { quantizeQ4_0, quantizeQ4_K, quantizeQ6_K, quantizeQ8_0, quantizeQ8_K } from '../../../test/helpers/ggml-quantize.ts';
import { hostTensorToFloat32 } from '../../tensor/host-dtype.ts';
import { dequantizeToFloat32, toHostTensor } from './dequantize.ts';
import { ggmlType, type GgmlType } from './ggml-types.ts';

const typeNamed = (name: string): GgmlType => {
  const type = [...Array(40).keys()].map(ggmlType).find((t) => t?.name === name);
  assert.ok(type, name);
  return type;
};

interface OracleCase {
  type: string;
  blocks: number;
  bytes_base64: string;
  float32_base64: string;
}

const oracle = JSON.parse(readFileSync('test/fixtures/gguf-blocks.json', 'utf8')) as { cases: OracleCase[] };

test('every quantized type llama.cpp can dequantize gives llama.cpp\'s values for random blocks (gguf-py oracle)', () => {
  assert.deepEqual(oracle.cases.map((c) => c.type).sort(), ['Q2_K', 'Q3_K', 'Q4_0', 'Q4_1', 'Q4_K', 'Q5_0', 'Q5_1', 'Q5_K', 'Q6_K', 'Q8_0']);
  for (const c of oracle.cases) {
    const type = typeNamed(c.type);
    const bytes = new Uint8Array(Buffer.from(c.bytes_base64, 'base64'));
    const expected = new Float32Array(new Uint8Array(Buffer.from(c.float32_base64, 'base64')).buffer);
    assert.equal(bytes.length, c.blocks * type.blockBytes, c.type);
    const got = dequantizeToFloat32(type, bytes, c.blocks * type.blockElements);
    let nonzero = 0;
    for (let i = 0; i < got.length; i++) {
      // numpy may contract a multiply-add differently: allow one float32 rounding of the larger term.
      const tolerance = 2 ** -23 * Math.max(Math.abs(expected[i]), 1e-30) * 4;
      assert.ok(Math.abs(got[i] - expected[i]) <= tolerance, `${c.type} value ${i}: ${got[i]} vs ${expected[i]}`);
      if (expected[i] !== 0) nonzero++;
    }
    assert.ok(nonzero > got.length / 2, `${c.type}: the oracle's blocks are mostly nonzero`);
  }
});

/** Values spread over a range, with an outlier per block so that scales differ from block to block. */
function testValues(count: number, seed: number): Float32Array {
  let s = seed;
  const next = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  return Float32Array.from({ length: count }, (_, i) => next() * (i % 97 === 0 ? 3 : 1));
}

const roundTrips: [string, (v: Float32Array) => Uint8Array, number][] = [
  // [type, quantizer, largest error as a fraction of the block's max |x|]
  ['Q8_0', quantizeQ8_0, 0.5 / 127 + 1e-3],
  ['Q4_0', quantizeQ4_0, 0.5 / 7 + 1e-3],
  ['Q8_K', quantizeQ8_K, 0.5 / 127 + 1e-6],
  ['Q6_K', quantizeQ6_K, 0.05],
  ['Q4_K', quantizeQ4_K, 0.12],
];

test('the test quantizers round-trip through the dequantizers within their step (Q8_K has no other oracle)', () => {
  for (const [name, quantize, fraction] of roundTrips) {
    const type = typeNamed(name);
    const values = testValues(type.blockElements * 8, name.length * 7919);
    const got = dequantizeToFloat32(type, quantize(values), values.length);
    for (let b = 0; b < values.length / type.blockElements; b++) {
      const block = values.subarray(b * type.blockElements, (b + 1) * type.blockElements);
      const limit = fraction * Math.max(...block.map(Math.abs));
      for (let j = 0; j < block.length; j++) {
        const i = b * type.blockElements + j;
        assert.ok(Math.abs(got[i] - values[i]) <= limit, `${name} value ${i}: ${got[i]} vs ${values[i]} (limit ${limit})`);
      }
    }
  }
});

test('toHostTensor passes F32/F16/BF16 bytes through and dequantizes the rest to the asked dtype', () => {
  const f32 = new Uint8Array(Float32Array.of(1.5, -2).buffer);
  assert.deepEqual(toHostTensor(typeNamed('F32'), f32, [1, 2], 'bf16'), { dtype: 'f32', shape: [1, 2], data: f32 });
  const values = testValues(64, 3);
  const bytes = quantizeQ8_0(values);
  const t = toHostTensor(typeNamed('Q8_0'), bytes, [2, 32], 'bf16');
  assert.equal(t.dtype, 'bf16');
  assert.deepEqual(t.shape, [2, 32]);
  const expected = dequantizeToFloat32(typeNamed('Q8_0'), bytes, 64);
  const decoded = hostTensorToFloat32(t);
  for (let i = 0; i < 64; i++) assert.ok(Math.abs(decoded[i] - expected[i]) <= Math.abs(expected[i]) * 2 ** -8, `value ${i}`);
});
