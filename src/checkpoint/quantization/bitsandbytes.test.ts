import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openCheckpoint, type Checkpoint } from '../checkpoint.ts';
import type { RawTensor } from '../safetensors.ts';
import { float32Tensor } from '../../tensor/host-ops.ts';
import { dequantizeWeight, isQuantized } from '../../tensor/quantized-weight.ts';
import { bitsAndBytesReader } from './bitsandbytes.ts';

const FIXTURES = fileURLToPath(new URL('../../../test/fixtures', import.meta.url));
const LAYER = 'model.layers.0.self_attn.q_proj';

/** The fixture's checkpoint with some tensors replaced (raw bytes, or float32 values). */
function patched(fixture: string, raw: Record<string, RawTensor>, floats: Record<string, Float32Array> = {}): Checkpoint {
  const inner = openCheckpoint(join(FIXTURES, fixture));
  return {
    ...inner,
    dir: inner.dir,
    tensorNames: inner.tensorNames,
    has: (name) => name in raw || inner.has(name),
    info: (name) => (name in raw ? { dtype: raw[name].dtype, shape: raw[name].shape } : inner.info(name)),
    read: (name) => (name in floats ? float32Tensor(floats[name], [floats[name].length]) : inner.read(name)),
    readRaw: (name) => raw[name] ?? inner.readRaw(name),
    close: () => inner.close(),
  };
}

function state(json: object): RawTensor {
  const data = new TextEncoder().encode(JSON.stringify(json));
  return { dtype: 'U8', shape: [data.length], data };
}

test('a double-quantized NF4 layer decodes to values within its blocks\' absmax, 16 per block at most', () => {
  const ckpt = openCheckpoint(join(FIXTURES, 'quant-bnb-nf4-dq'));
  const w = bitsAndBytesReader(ckpt, { method: 'bitsandbytes', bits: 4, quantType: 'nf4', threshold: 0 }).read(LAYER);
  assert.ok(isQuantized(w) && w.format === 'nf4' && w.groupSize === 64 && w.rows === 64 && w.cols === 64);
  const values = dequantizeWeight(w);
  for (let block = 0; block < values.length / 64; block++) {
    const slice = values.subarray(block * 64, (block + 1) * 64);
    assert.equal(Math.max(...slice.map(Math.abs)), w.scales[block], `block ${block}: the absmax is one of its values (NF4 has ±1)`);
    assert.ok(new Set(slice).size <= 16);
  }
});

test('bitsandbytes layouts Keel does not read get one error each', () => {
  const fourBit = { method: 'bitsandbytes', bits: 4, quantType: 'nf4', threshold: 0 } as const;
  const stateName = `${LAYER}.weight.quant_state.bitsandbytes__nf4`;
  const nf4 = (raw: Record<string, RawTensor>, floats?: Record<string, Float32Array>) => bitsAndBytesReader(patched('quant-bnb-nf4-dq', raw, floats), fourBit);
  const original = JSON.parse(new TextDecoder().decode(openCheckpoint(join(FIXTURES, 'quant-bnb-nf4-dq')).readRaw(stateName).data));
  assert.throws(() => nf4({ [stateName]: state({ ...original, shape: [32, 128], blocksize: 96 }) }).read(LAYER), /128 input columns are not a multiple of blocksize 96/);
  assert.throws(() => nf4({ [stateName]: state({ ...original, quant_type: 'fp4' }) }).read(LAYER), /quant_type "fp4", but the config says nf4/);
  assert.throws(() => nf4({ [`${LAYER}.weight`]: { dtype: 'BF16', shape: [1024, 1], data: new Uint8Array(2048) } }).read(LAYER), /weight is BF16; Keel reads bnb_4bit_quant_storage uint8/);
  assert.throws(() => nf4({}, { [`${LAYER}.weight.quant_map`]: new Float32Array(16).fill(0.5) }).read(LAYER), /quant_map is not bitsandbytes' nf4 table \(custom code tables are not supported\)/);
  const eightBit = bitsAndBytesReader(patched('quant-bnb-int8', { [`${LAYER}.weight_format`]: { dtype: 'U8', shape: [], data: new Uint8Array([3]) } }), { method: 'bitsandbytes', bits: 8, quantType: 'nf4', threshold: 6 });
  assert.throws(() => eightBit.read(LAYER), /weight_format 3 is not supported \(Keel reads 0, row-major\)/);
});
