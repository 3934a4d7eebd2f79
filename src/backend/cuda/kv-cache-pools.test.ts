import assert from 'node:assert/strict';
import { test } from 'node:test';
import { kvBytesPerBlock, type LayerKvSpec } from '../../step/kv-cache-layout.ts';
import { CudaKvCache } from './cuda-tensor.ts';

// The CUDA cache's pool layout is pure arithmetic (no GPU): a sparse MLA layer (DeepSeek-V3.2) keeps
// its rows in the cache's dtype, int8's row scales after them, then its indexer keys in the rows'
// dtype, then (either 8-bit dtype) a scale per key.

test('a sparse MLA layer\'s CUDA pools: rows, int8 row scales, indexer keys in the rows\' dtype, 8-bit key scales, sized as kvBytesPerBlock counts them', () => {
  const layers: LayerKvSpec[] = [
    { kind: 'mla', latentDim: 32, ropeDim: 8, indexKeys: { keyDim: 16 } },
    { kind: 'mla', latentDim: 32, ropeDim: 8, indexKeys: { keyDim: 16 } },
  ];
  const [numBlocks, blockSize, base] = [10, 4, 4096];
  for (const dtype of ['auto', 'fp8_e4m3', 'int8'] as const) {
    const cache = new CudaKvCache({ numBlocks, blockSize, layers, dtype }, base);
    assert.equal(cache.totalBytes, numBlocks * kvBytesPerBlock(layers, blockSize, 2, dtype), dtype);
    const elementBytes = dtype === 'auto' ? 2 : 1;
    const rowScaleBytes = dtype === 'int8' ? 4 : 0;
    const keyScaleBytes = dtype === 'auto' ? 0 : 4;
    const slots = numBlocks * blockSize;
    assert.equal(cache.rows(0), base, dtype);
    assert.equal(cache.rowScales(0), dtype === 'int8' ? base + slots * 40 : 0, `${dtype}: int8's row scales follow the row codes`);
    assert.equal(cache.indexKeys(0) - cache.rows(0), slots * (40 * elementBytes + rowScaleBytes), `${dtype}: the keys follow the rows and their scales`);
    assert.equal(cache.indexKeyScales(0), dtype === 'auto' ? 0 : cache.indexKeys(0) + slots * 16, `${dtype}: 8-bit key scales follow the key codes`);
    assert.equal(cache.rows(1) - cache.indexKeys(0), slots * (16 * elementBytes + keyScaleBytes), `${dtype}: the keys (and their scales), then the next layer`);
  }
});

test('state layers keep no pool: their float32 slots follow the attention pools, one run of slots per state layer', () => {
  const state: LayerKvSpec = { kind: 'state', convElements: 6, recurrentElements: 32 };
  const full: LayerKvSpec = { kind: 'attention', numKvHeads: 2, headDim: 8, slidingWindow: null };
  const [numBlocks, blockSize, base, stateSlots] = [10, 4, 4096, 3];
  const cache = new CudaKvCache({ numBlocks, blockSize, layers: [state, state, full], stateSlots }, base);
  const poolBytes = numBlocks * kvBytesPerBlock([full], blockSize, 2);
  assert.equal(cache.keys(2), base);
  assert.equal(cache.stateSlots(0, 'test').ptr, base + poolBytes);
  assert.equal(cache.stateSlots(1, 'test').ptr, base + poolBytes + stateSlots * 38 * 4);
  assert.deepEqual({ ...cache.stateSlots(1, 'test'), ptr: 0 }, { ptr: 0, slotStride: 38, convElements: 6 });
  assert.equal(cache.totalBytes, poolBytes + 2 * stateSlots * 38 * 4);
  assert.throws(() => cache.stateSlots(2, 'test'), /not a per-sequence state/);
});
