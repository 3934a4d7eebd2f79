import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { referenceMatmul } from '../../../test/helpers/reference-matmul.ts';
import { quantizedMatmul } from '../../backend/cpu/ops/quantized-matmul.ts';
import { floatToF16Bits } from '../../tensor/host-dtype.ts';
import { seededRng } from '../../tensor/seeded-rng.ts';
import { dequantizeWeight, describeQuantized, type QuantizedWeight } from '../../tensor/quantized-weight.ts';
import { dequantizeToFloat32 } from './dequantize.ts';
import { ggmlType, type GgmlType } from './ggml-types.ts';
import { repackable, repackBlocks } from './repack-blocks.ts';

const typeNamed = (name: string): GgmlType => {
  const type = [...Array(40).keys()].map(ggmlType).find((t) => t?.name === name);
  assert.ok(type, name);
  return type;
};

const REPACKED = ['Q8_0', 'Q4_0', 'Q4_1', 'Q4_K', 'Q6_K'];
/** Byte offsets of each type's fp16 factors in a block (d, and m or dmin). */
const HALVES: Record<string, number[]> = { Q8_0: [0], Q4_0: [0], Q4_1: [0, 2], Q4_K: [0, 2], Q6_K: [208] };

/** Random bytes for every field, with finite fp16 factors (random bytes could make NaN or infinity). */
function randomBlocks(type: GgmlType, blocks: number, random: () => number): Uint8Array {
  const bytes = Uint8Array.from({ length: blocks * type.blockBytes }, () => Math.floor(random() * 256));
  for (let b = 0; b < blocks; b++) {
    for (const at of HALVES[type.name]) {
      const bits = floatToF16Bits((random() - 0.5) * 0.2);
      bytes[b * type.blockBytes + at] = bits & 0xff;
      bytes[b * type.blockBytes + at + 1] = bits >> 8;
    }
  }
  return bytes;
}

function assertSameValues(w: QuantizedWeight, bytes: Uint8Array, type: GgmlType, what: string): void {
  const expected = dequantizeToFloat32(type, bytes, w.rows * w.cols);
  const got = dequantizeWeight(w);
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== expected[i]) assert.fail(`${what} (${describeQuantized(w)}) value ${i}: ${got[i]}, the dequantizer ${expected[i]}`);
  }
}

test('Q8_0, Q4_0, Q4_1, Q4_K and Q6_K are repacked, the other quantized types are not', () => {
  const all = ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0', 'Q2_K', 'Q3_K', 'Q4_K', 'Q5_K', 'Q6_K', 'Q8_K'];
  assert.deepEqual(all.filter((name) => repackable(typeNamed(name))), ['Q4_0', 'Q4_1', 'Q8_0', 'Q4_K', 'Q6_K']);
  assert.ok(!repackable(typeNamed('F16')));
});

test('repacked blocks decode to the dequantizer\'s float32 values bit for bit: llama.cpp\'s oracle blocks and random ones', () => {
  const oracle = JSON.parse(readFileSync('test/fixtures/gguf-blocks.json', 'utf8')) as { cases: { type: string; blocks: number; bytes_base64: string }[] };
  for (const c of oracle.cases.filter((o) => REPACKED.includes(o.type))) {
    const type = typeNamed(c.type);
    const bytes = new Uint8Array(Buffer.from(c.bytes_base64, 'base64'));
    assertSameValues(repackBlocks(type, bytes, 1, c.blocks * type.blockElements), bytes, type, `oracle ${c.type}`);
  }
  const seed = 2207;
  const random = seededRng(seed);
  for (const name of REPACKED) {
    const type = typeNamed(name);
    for (const [rows, blocksPerRow] of [[1, 1], [3, 2], [17, 5]]) {
      const bytes = randomBlocks(type, rows * blocksPerRow, random);
      const w = repackBlocks(type, bytes, rows, blocksPerRow * type.blockElements);
      assert.equal(w.groupSize, name === 'Q6_K' ? 16 : 32);
      assert.equal(w.format, name === 'Q8_0' || name === 'Q6_K' ? 'int8' : 'int4');
      assert.equal(w.mins !== null, name === 'Q4_1' || name === 'Q4_K');
      assertSameValues(w, bytes, type, `${name} [${rows}, ${blocksPerRow} blocks] (seed ${seed})`);
    }
  }
});

test('a repacked layer\'s CPU matmul equals the product with the dequantized float32 weight over random blocks', () => {
  const seed = 4093;
  const random = seededRng(seed);
  for (const name of REPACKED) {
    const type = typeNamed(name);
    const [outDim, inDim, rows] = [13, 2 * 256, 5];
    const bytes = randomBlocks(type, (outDim * inDim) / type.blockElements, random);
    const w = repackBlocks(type, bytes, outDim, inDim);
    const x = Float32Array.from({ length: rows * inDim }, () => random() * 2 - 1);
    const bias = Float32Array.from({ length: outDim }, () => random() - 0.5);
    const out = new Float32Array(rows * outDim);
    quantizedMatmul(x, rows, w, bias, out);
    const expected = referenceMatmul(x, rows, dequantizeToFloat32(type, bytes, outDim * inDim), outDim, inDim, bias);
    assert.deepEqual(out, expected, `${name} (seed ${seed})`);
  }
});

test('blocks that do not fill the shape are refused', () => {
  const type = typeNamed('Q4_K');
  assert.throws(() => repackBlocks(type, new Uint8Array(144), 1, 512), /144 bytes for \[1, 512\]/);
  assert.throws(() => repackBlocks(type, new Uint8Array(144), 1, 32), /not whole blocks of 256/);
  assert.throws(() => repackBlocks(typeNamed('Q5_K'), new Uint8Array(176), 1, 256), /not repacked/);
});
