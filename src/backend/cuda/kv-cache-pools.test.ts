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
