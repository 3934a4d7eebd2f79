import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from './cpu-backend.ts';
import type { CpuKvCache } from './cpu-tensor.ts';
import { poolArrays } from './ops/kv-codes.ts';
import type { HeadNorm, Tensor } from '../backend.ts';
import { DEFAULT_ENGINE_CONFIG } from '../../config.ts';
import { KeelError } from '../../errors.ts';
import { describeBatch } from '../../step/batch.ts';
import { quantizeRoundToNearest } from '../../tensor/quantize-rtn.ts';
import { dequantizeWeight } from '../../tensor/quantized-weight.ts';
import { TestRandom, testSeed } from '../../../test/helpers/cpu-random.ts';
import { f32HostTensor, plainRopeTable } from '../../../test/helpers/cpu-random-llama.ts';
import { testDraw } from '../../../test/helpers/sampling-draw.ts';

const random = new TestRandom(testSeed('cpu-backend'));
const backend = new CpuBackend();
const load = (values: Float32Array, shape: number[]) => backend.loadWeight(f32HostTensor(values, shape));

test('declares float32 KV elements and the configured CPU KV budget', () => {
  assert.equal(backend.kvElementBytes, 4);
  assert.equal(backend.kvCacheBudgetBytes({ ...DEFAULT_ENGINE_CONFIG, cpuKvCacheBytes: 12345 }), 12345);
});

test('loadWeight keeps the shape and decodes bf16 bytes', () => {
  const t = backend.loadWeight({ dtype: 'bf16', shape: [1, 2], data: Uint8Array.of(0x80, 0x3f, 0x40, 0xc0) });
  assert.deepEqual(t.shape, [1, 2]);
  assert.deepEqual(Array.from(backend.toHost(t)), [1, -3]);
});

test('loadWeight rejects bytes that do not fill the shape with an invalid_model error', () => {
  assert.throws(() => backend.loadWeight({ dtype: 'f32', shape: [2, 2], data: new Uint8Array(12) }), (e: unknown) => e instanceof KeelError && e.kind === 'invalid_model');
});

test('toHost returns a copy that later in-place ops do not change', () => {
  const residual = load(Float32Array.of(1, 2, 3, 4), [1, 4]);
  const snapshot = backend.toHost(residual);
  backend.addRmsNorm(load(Float32Array.of(1, 1, 1, 1), [1, 4]), residual, load(new Float32Array(4).fill(1), [4]), 1e-6);
  assert.deepEqual(Array.from(snapshot), [1, 2, 3, 4]);
  assert.deepEqual(Array.from(backend.toHost(residual)), [2, 3, 4, 5]);
});

test('linear multiplies by the transposed weight and adds the bias', () => {
  const x = load(Float32Array.of(1, 2, 3, 4, 5, 6), [2, 3]);
  const w = load(Float32Array.of(1, 0, 0, 0, 1, 1), [2, 3]);
  const y = backend.linear(x, w, load(Float32Array.of(10, 20), [2]));
  assert.deepEqual(y.shape, [2, 2]);
  assert.deepEqual(Array.from(backend.toHost(y)), [11, 25, 14, 31]);
});

test('sampleRows at temperature 0: the largest value per row, the lowest index on ties, -1 when none is finite', () => {
  const x = load(Float32Array.from([1, 3, 3, 2, -Infinity, NaN, -Infinity, NaN, 0, -1, Infinity, 5]), [3, 4]);
  const draws = [0, 1, 2].map((row) => testDraw({ row, temperature: 0 }));
  assert.deepEqual([...backend.sampleRows(x, draws).read().tokenIds], [1, -1, 2]);
});

test('softcap maps x to cap · tanh(x / cap) in place: near-identity for small x, bounded by ±cap', () => {
  const x = load(Float32Array.of(0, 0.01, -3, 30, -1000, 1e30), [2, 3]);
  backend.softcap(x, 10);
  const out = backend.toHost(x);
  const expected = [0, 10 * Math.tanh(0.001), 10 * Math.tanh(-0.3), 10 * Math.tanh(3), -10, 10];
  expected.forEach((e, i) => assert.ok(Math.abs(out[i] - e) <= 1e-6 * Math.max(1, Math.abs(e)), `[${i}]: ${out[i]} vs ${e}`));
});

test('scale multiplies every element in place by the float32 factor', () => {
  const x = load(Float32Array.of(0, 1, -3, 2.5, 1e30, -0.125), [2, 3]);
  backend.scale(x, 0.22);
  const f = Math.fround(0.22);
  assert.deepEqual([...backend.toHost(x)], [0, 1, -3, 2.5, 1e30, -0.125].map((v) => Math.fround(Math.fround(v) * f)));
});

test('layerNorm reads a per-head weight [heads, width] as one value per column, and refuses groups that do not tile a row', () => {
  // Two heads of 2: each normalizes to (-1, 1) (eps 0), then takes its own head's weights.
  const x = load(Float32Array.of(1, 3, 10, 30), [1, 4]);
  const out = backend.toHost(backend.layerNorm(x, load(Float32Array.of(1, 2, 3, 4), [2, 2]), null, 0, 2));
  assert.deepEqual([...out], [-1, 2, -3, 4]);
  assert.throws(() => backend.layerNorm(x, load(new Float32Array(4), [4]), null, 1e-5, 3), /groups of 3 do not tile rows of 4/);
  assert.throws(() => backend.layerNorm(x, load(new Float32Array(2), [2]), null, 1e-5, 2), /layerNorm: weight of 2 values for rows of 4/);
});

test('linear names both shapes when they do not fit', () => {
  assert.throws(() => backend.linear(load(new Float32Array(6), [2, 3]), load(new Float32Array(8), [2, 4]), null), /\[2, 3\].*\[2, 4\]/);
});

test('embedding and gatherLogitsRows pick rows by token id and by logits index; embedding scales its rows', () => {
  const table = load(Float32Array.from({ length: 10 }, (_, i) => i), [5, 2]);
  const step = backend.beginStep(describeBatch([{ tokens: [3, 1], startPos: 0, blockTables: [[0]] }, { tokens: [4], startPos: 0, blockTables: [[1]] }], 4));
  const embedded = backend.embedding(table, step, 1, 0);
  assert.deepEqual(Array.from(backend.toHost(embedded)), [6, 7, 2, 3, 8, 9]);
  assert.deepEqual(Array.from(backend.toHost(backend.gatherLogitsRows(embedded, step))), [2, 3, 8, 9]);
  assert.deepEqual(Array.from(backend.toHost(backend.embedding(table, step, 0.5, 0))), [3, 3.5, 1, 1.5, 4, 4.5]);
});

test('embedding gathers a quantized table\'s rows dequantized and scaled, zero rows for ids outside its shard; only int4/int8 tables in column order load', () => {
  const [rows, cols, firstRow, ids] = [6, 64, 2, [3, 1, 9, 7]];
  for (const method of ['int4', 'int8'] as const) {
    const w = quantizeRoundToNearest(random.floats(rows * cols), rows, cols, method);
    // GGUF's Q4_K/Q4_1 blocks repack to int4 with a float minimum per group.
    if (method === 'int4') w.mins = random.floats(w.scales.length);
    const table = backend.loadQuantizedWeight(w, { table: true });
    const step = backend.beginStep(describeBatch([{ tokens: ids, startPos: 0, blockTables: [[0]] }], 4));
    const dense = dequantizeWeight(w);
    const expected = ids.flatMap((id) => {
      const row = id - firstRow;
      return row >= 0 && row < rows ? Array.from(dense.subarray(row * cols, (row + 1) * cols), (v) => Math.fround(v * 0.5)) : new Array<number>(cols).fill(0);
    });
    assert.deepEqual(Array.from(backend.toHost(backend.embedding(table, step, 0.5, firstRow))), expected, method);
  }
  assert.throws(() => backend.loadQuantizedWeight(quantizeRoundToNearest(random.floats(rows * cols), rows, cols, 'fp8'), { table: true }), /only int4 and int8 tables/);
});

test('embedding reads a token the last sampling pass drew, and names a source past its draws', () => {
  const cpu = new CpuBackend();
  const table = load(Float32Array.from({ length: 10 }, (_, i) => i), [5, 2]);
  const logits = load(Float32Array.of(0, 0, 0, 9, 0), [1, 5]);
  cpu.sampleRows(logits, [testDraw({ temperature: 0 })]);
  const batch = describeBatch([{ tokens: [1], startPos: 0, blockTables: [[0]], lastTokenSource: 0 }], 4);
  assert.deepEqual(Array.from(cpu.toHost(cpu.embedding(table, cpu.beginStep(batch), 1, 0))), [6, 7]);
  batch.tokenSources[0] = 1;
  assert.throws(() => cpu.embedding(table, cpu.beginStep(batch), 1, 0), /token source 1 is outside the 1 draws of the last sampling pass/);
});

test('gatedLinear multiplies by the gate rows and the up rows, then silu(gate) * up', () => {
  // x = [1, 1]; gate rows give 0 and 1, up rows 5 and 7.
  const y = backend.gatedLinear(load(Float32Array.of(1, 1), [1, 2]), load(Float32Array.of(0, 0, 1, 0, 2, 3, 7, 0), [4, 2]), { kind: 'silu' });
  assert.deepEqual(y.shape, [1, 2]);
  assert.deepEqual(Array.from(backend.toHost(y)), [0, 7 / (1 + Math.exp(-1))].map(Math.fround));
});

test('copyBlocks copies whole blocks in every layer, K and V, whatever each layer holds, and nothing else', () => {
  const attention = (numKvHeads: number, headDim: number) => ({ kind: 'attention' as const, numKvHeads, headDim, slidingWindow: null });
  const layout = { numBlocks: 5, blockSize: 2, layers: [attention(2, 3), attention(1, 4), { kind: 'mla' as const, latentDim: 6, ropeDim: 2 }] };
  const cache = backend.createKvCache(layout) as CpuKvCache;
  const pools = cache.pools.flat().map((pool) => pool.codes as Float32Array);
  assert.equal(pools.length, 5);
  for (const pool of pools) pool.set(random.floats(pool.length));
  const before = pools.map((p) => p.slice());
  backend.copyBlocks(cache, Int32Array.of(1, 4), Int32Array.of(3, 0));
  const block = (pool: Float32Array, b: number) => pool.subarray((b * pool.length) / layout.numBlocks, ((b + 1) * pool.length) / layout.numBlocks);
  pools.forEach((pool, i) => {
    assert.deepEqual(block(pool, 3), block(before[i], 1), `pool ${i} block 3`);
    assert.deepEqual(block(pool, 0), block(before[i], 4), `pool ${i} block 0`);
    for (const b of [1, 2, 4]) assert.deepEqual(block(pool, b), block(before[i], b), `pool ${i} block ${b} must be unchanged`);
  });
  assert.throws(() => backend.copyBlocks(cache, Int32Array.of(5), Int32Array.of(0)), /outside \[0, 5\)/);
});

test('copyStateSlots copies every state layer\'s slots, pairs in order, and nothing else', () => {
  const state = { kind: 'state' as const, convElements: 3, recurrentElements: 4 };
  const layout = { numBlocks: 2, blockSize: 2, layers: [state, { kind: 'attention' as const, numKvHeads: 1, headDim: 2, slidingWindow: null }, state], stateSlots: 4 };
  const cache = backend.createKvCache(layout) as CpuKvCache;
  const states = cache.states.filter((s) => s !== null);
  for (const s of states) s.set(random.floats(s.length));
  const before = states.map((s) => s.slice());
  // Slot 1 takes 3's state, then 0 takes what 1 now holds.
  backend.copyStateSlots(cache, Int32Array.of(3, 1), Int32Array.of(1, 0));
  const slot = (s: Float32Array, i: number) => s.subarray(i * 7, (i + 1) * 7);
  states.forEach((s, l) => {
    for (const [at, from] of [[0, 3], [1, 3], [2, 2], [3, 3]]) assert.deepEqual(slot(s, at), slot(before[l], from), `state layer ${l}, slot ${at}`);
  });
  assert.throws(() => backend.copyStateSlots(cache, Int32Array.of(0), Int32Array.of(4)), /state slot pair 0 -> 4 is outside \[0, 4\)/);
});

test('ropeAndCacheWrite then attention: a single cached token attends only to itself', () => {
  const shape = { numHeads: 2, numKvHeads: 1, headDim: 4, scale: 0.5, slidingWindow: null, softcap: null, sinks: null, streaming: null };
  const layer = { kind: 'attention' as const, numKvHeads: 1, headDim: 4, slidingWindow: null };
  const cache = backend.createKvCache({ numBlocks: 3, blockSize: 4, layers: [layer, layer] });
  const rope = backend.uploadRopeTable(plainRopeTable(4, 10000, 16));
  const step = backend.beginStep(describeBatch([{ tokens: [0], startPos: 0, blockTables: [[2]] }], 4));
  const qkv = load(random.floats(16), [1, 16]);
  const value = backend.toHost(qkv).slice(12, 16);
  backend.ropeAndCacheWrite(qkv, rope, cache, 1, step, shape);
  const out = backend.toHost(backend.attention(qkv, cache, 1, step, shape));
  assert.deepEqual(Array.from(out), [...value, ...value]);
  assert.deepEqual(Array.from((cache as CpuKvCache).pools[1][1].codes.subarray(32, 36)), Array.from(value));
  assert.ok((cache as CpuKvCache).pools[0].every((pool) => pool.codes.every((v) => v === 0)), 'layer 0 must be untouched');
});

/** ropeAndCacheWrite of one token at position 0 (an identity rotation) with `norm`; returns qkv and the cached key and value. */
function normAtPositionZero(values: Float32Array, norm: HeadNorm): { qkv: number[]; key: number[]; value: number[] } {
  const shape = { numHeads: 1, numKvHeads: 1, headDim: 2, scale: 1, slidingWindow: null, softcap: null, sinks: null, streaming: null };
  const cache = backend.createKvCache({ numBlocks: 1, blockSize: 4, layers: [{ kind: 'attention', numKvHeads: 1, headDim: 2, slidingWindow: null }] });
  const step = backend.beginStep(describeBatch([{ tokens: [0], startPos: 0, blockTables: [[0]] }], 4));
  const qkv = load(values, [1, 6]);
  backend.ropeAndCacheWrite(qkv, backend.uploadRopeTable(plainRopeTable(2, 10000, 4)), cache, 0, step, shape, norm);
  const [keys, vals] = (cache as CpuKvCache).pools[0];
  return { qkv: Array.from(backend.toHost(qkv)), key: Array.from(keys.codes.subarray(0, 2)), value: Array.from(vals.codes.subarray(0, 2)) };
}

test('ropeAndCacheWrite with a head norm normalizes q heads and k heads with their own weights, caches the normed key, leaves v alone', () => {
  const out = normAtPositionZero(Float32Array.of(3, 4, 6, 8, 5, 7), { q: load(Float32Array.of(1, 1), [2]), k: load(Float32Array.of(2, 2), [2]), v: null, eps: 0 });
  const qRms = Math.sqrt((3 * 3 + 4 * 4) / 2);
  const kRms = Math.sqrt((6 * 6 + 8 * 8) / 2);
  assert.deepEqual(out.qkv, [3 / qRms, 4 / qRms, (6 / kRms) * 2, (8 / kRms) * 2, 5, 7].map(Math.fround));
  assert.deepEqual(out.key, out.qkv.slice(2, 4));
  assert.deepEqual(out.value, [5, 7]);
});

test('ropeAndCacheWrite with a value weight in its head norm normalizes and caches the value heads with it too', () => {
  const ones = load(Float32Array.of(1, 1), [2]);
  const out = normAtPositionZero(Float32Array.of(3, 4, 6, 8, 5, 12), { q: ones, k: ones, v: load(Float32Array.of(3, 3), [2]), eps: 0 });
  const vRms = Math.sqrt((5 * 5 + 12 * 12) / 2);
  assert.deepEqual(out.qkv.slice(4), [(5 / vRms) * 3, (12 / vRms) * 3].map(Math.fround));
  assert.deepEqual(out.value, out.qkv.slice(4));
});

test('rejects a tensor that is not a CPU tensor', () => {
  const foreign: Tensor = { shape: [1, 1] };
  assert.throws(() => backend.toHost(foreign), /not a CPU tensor/);
});

test('ropeAndCacheWrite rotates only the leading rotary dims of each head (partial rotary)', () => {
  const attn = { numHeads: 1, numKvHeads: 1, headDim: 4, scale: 1, slidingWindow: null, softcap: null, sinks: null, streaming: null };
  const layer = { kind: 'attention' as const, numKvHeads: 1, headDim: 4, slidingWindow: null };
  const cache = backend.createKvCache({ numBlocks: 1, blockSize: 4, layers: [layer] });
  const rope = backend.uploadRopeTable(plainRopeTable(2, 10000, 8));
  const step = backend.beginStep(describeBatch([{ tokens: [0], startPos: 3, blockTables: [[0]] }], 4));
  const qkv = load(Float32Array.of(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), [1, 12]);
  backend.ropeAndCacheWrite(qkv, rope, cache, 0, step, attn);
  const [c, s] = [Math.cos(3), Math.sin(3)];
  const expected = [1 * c - 2 * s, 2 * c + 1 * s, 3, 4, 5 * c - 6 * s, 6 * c + 5 * s, 7, 8, 9, 10, 11, 12];
  const out = backend.toHost(qkv);
  expected.forEach((v, i) => assert.ok(Math.abs(out[i] - v) < 1e-6, `[${i}] ${out[i]} vs ${v}`));
});

test('copySlots copies slots in every layer and pool array (int8 scales too), pairs in order; a slot outside the pool is refused', () => {
  const attention = { kind: 'attention' as const, numKvHeads: 1, headDim: 2, slidingWindow: null };
  const mla = { kind: 'mla' as const, latentDim: 3, ropeDim: 1 };
  for (const dtype of ['auto', 'fp8_e4m3', 'int8'] as const) {
    const cache = backend.createKvCache({ numBlocks: 3, blockSize: 2, layers: [attention, mla], dtype }) as CpuKvCache;
    const arrays = cache.pools.flat().flatMap(poolArrays);
    assert.equal(arrays.length, dtype === 'int8' ? 6 : 3);
    // Every element holds its array, slot and offset, so where a row came from shows.
    arrays.forEach((array, a) => {
      const width = array.length / 6;
      array.forEach((_, i) => (array[i] = a * 24 + Math.floor(i / width) * 4 + (i % width)));
    });
    const before = arrays.map((array) => array.slice());
    backend.copySlots(cache, Int32Array.of(4, 1, 5), Int32Array.of(1, 2, 4));
    arrays.forEach((array, a) => {
      const width = array.length / 6;
      const row = (slot: number) => [...array.subarray(slot * width, (slot + 1) * width)];
      const was = (slot: number) => [...before[a].subarray(slot * width, (slot + 1) * width)];
      assert.deepEqual(row(1), was(4), dtype);
      // The second pair reads slot 1 after the first pair wrote it.
      assert.deepEqual(row(2), was(4), dtype);
      assert.deepEqual(row(4), was(5), dtype);
      for (const slot of [0, 3, 5]) assert.deepEqual(row(slot), was(slot), dtype);
    });
    assert.throws(() => backend.copySlots(cache, Int32Array.of(6), Int32Array.of(0)), /slot pair 6 -> 0 is outside \[0, 6\)/);
  }
});

test('gatherRows takes rows in any order, repeats included, and refuses a row outside the tensor', () => {
  const x = load(Float32Array.from({ length: 8 }, (_, i) => i), [4, 2]);
  assert.deepEqual([...backend.toHost(backend.gatherRows(x, Int32Array.of(3, 0, 3)))], [6, 7, 0, 1, 6, 7]);
  assert.throws(() => backend.gatherRows(x, Int32Array.of(4)), /row 4 is outside/);
});

test('silu is x · σ(x), in place', () => {
  const x = load(Float32Array.of(-3, 0, 0.5, 4), [1, 4]);
  backend.silu(x);
  const expected = [-3, 0, 0.5, 4].map((v) => Math.fround(v / (1 + Math.exp(-v))));
  backend.toHost(x).forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-6, `[${i}] ${v} vs ${expected[i]}`));
});

test('writeCacheRows puts rows at their slots, readCacheRows reads them back in any order; copy ops carry them', () => {
  const cache = backend.createKvCache({ numBlocks: 3, blockSize: 2, layers: [{ kind: 'attention', numKvHeads: 1, headDim: 2, slidingWindow: null }, { kind: 'rows', width: 3 }] });
  backend.writeCacheRows(cache, 1, load(Float32Array.of(1, 2, 3, 4, 5, 6), [2, 3]), Int32Array.of(5, 0));
  assert.deepEqual(Array.from(backend.toHost(backend.readCacheRows(cache, 1, Int32Array.of(0, 5, 0)))), [4, 5, 6, 1, 2, 3, 4, 5, 6]);
  backend.copyBlocks(cache, Int32Array.of(2), Int32Array.of(1));
  backend.copySlots(cache, Int32Array.of(0), Int32Array.of(4));
  assert.deepEqual(Array.from(backend.toHost(backend.readCacheRows(cache, 1, Int32Array.of(3, 4)))), [1, 2, 3, 4, 5, 6]);
  assert.throws(() => backend.readCacheRows(cache, 0, Int32Array.of(0)), /layer 0 holds attention rows, not hidden-state rows/);
  assert.throws(() => backend.readCacheRows(cache, 1, Int32Array.of(6)), /slot 6 is outside \[0, 6\)/);
  assert.throws(() => backend.writeCacheRows(cache, 1, load(new Float32Array(4), [2, 2]), Int32Array.of(0, 1)), /rows \[2, 2\] for 2 slots of width 3/);
});

test("a pipeline stage's cache holds rows under their model layer (firstLayer), and no other layer", () => {
  const layers = [{ kind: 'attention', numKvHeads: 1, headDim: 2, slidingWindow: null }, { kind: 'rows', width: 2 }] as const;
  const cache = backend.createKvCache({ numBlocks: 2, blockSize: 2, layers, firstLayer: 4 });
  backend.writeCacheRows(cache, 5, load(Float32Array.of(1, 2, 3, 4), [2, 2]), Int32Array.of(3, 1));
  assert.deepEqual(Array.from(backend.toHost(backend.readCacheRows(cache, 5, Int32Array.of(1, 3)))), [3, 4, 1, 2]);
  assert.throws(() => backend.readCacheRows(cache, 1, Int32Array.of(0)), /layer 1 is outside the cache's layers \[4, 6\)/);
  assert.throws(() => backend.readCacheRows(cache, 4, Int32Array.of(0)), /layer 4 holds attention rows, not hidden-state rows/);
});

test('concatColumns lays each row of the parts side by side, in order', () => {
  const a = load(Float32Array.of(1, 2, 3, 4), [2, 2]);
  const b = load(Float32Array.of(5, 6), [2, 1]);
  assert.deepEqual(Array.from(backend.toHost(backend.concatColumns([a, b, a]))), [1, 2, 5, 1, 2, 3, 4, 6, 3, 4]);
  assert.throws(() => backend.concatColumns([a, load(new Float32Array(3), [3, 1])]), /parts of 2, 3 rows/);
});
