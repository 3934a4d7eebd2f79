import assert from 'node:assert/strict';
import { test } from 'node:test';
import { kvBytesPerBlock, type LayerKvSpec } from '../../step/kv-cache-layout.ts';
import { CudaKvCache } from './cuda-tensor.ts';

// The CUDA cache's pool layout is pure arithmetic (no GPU): a sparse MLA layer (DeepSeek-V3.2) keeps
// its rows in the cache's dtype, int8's row scales after them, then its indexer keys in bf16.

test('a sparse MLA layer\'s CUDA pools: rows, int8 row scales, then bf16 indexer keys, sized as kvBytesPerBlock counts them', () => {
  const layers: LayerKvSpec[] = [
    { kind: 'mla', latentDim: 32, ropeDim: 8, indexKeys: { keyDim: 16 } },
    { kind: 'mla', latentDim: 32, ropeDim: 8, indexKeys: { keyDim: 16 } },
  ];
  const [numBlocks, blockSize, base] = [10, 4, 4096];
  for (const dtype of ['auto', 'fp8_e4m3', 'int8'] as const) {
    const cache = new CudaKvCache({ numBlocks, blockSize, layers, dtype }, base);
    assert.equal(cache.totalBytes, numBlocks * kvBytesPerBlock(layers, blockSize, 2, dtype), dtype);
    const rowBytes = 40 * (dtype === 'auto' ? 2 : 1);
    const scaleBytes = dtype === 'int8' ? 4 : 0;
    assert.equal(cache.rows(0), base, dtype);
    assert.equal(cache.indexKeys(0) - cache.rows(0), numBlocks * blockSize * (rowBytes + scaleBytes), `${dtype}: the keys follow the rows and their scales`);
    assert.equal(cache.rows(1) - cache.indexKeys(0), numBlocks * blockSize * 16 * 2, `${dtype}: bf16 keys, then the next layer`);
  }
});
