import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { checkCudaKvLayout, MAX_CUDA_HEAD_DIM, MAX_CUDA_KV_SLOTS } from '../../../src/backend/cuda/kv-layout-limits.ts';
import { createModel, parseModelArchitecture } from '../../../src/models/registry.ts';
import type { KvCacheDtype, KvCacheLayout, LayerKvSpec } from '../../../src/step/kv-cache-layout.ts';
import { assertInvalidModel } from '../../helpers/invalid-model.ts';
import { FIXTURES_DIR } from '../../helpers/oracle-fixtures.ts';

// The CUDA backend's KV layout guard (createKvCache runs it before anything reaches the device),
// checked without a GPU: every Gemma 4 fixture and a Gemma 4 of the released models' shapes (full
// layers of head dim 512) pass it in every cache dtype, and head dims the kernels do not take fail
// with the limit named.

const DTYPES: readonly KvCacheDtype[] = ['auto', 'fp8_e4m3', 'int8', 'int4'];

function layout(layers: readonly LayerKvSpec[], dtype: KvCacheDtype): KvCacheLayout {
  return { numBlocks: 8, blockSize: 16, layers, dtype };
}

function kvLayers(config: Record<string, unknown>, source: string): readonly LayerKvSpec[] {
  return createModel(parseModelArchitecture(config, source), 64).kvLayers;
}

function attentionHeadDims(layers: readonly LayerKvSpec[]): number[] {
  return [...new Set(layers.flatMap((spec) => (spec.kind === 'attention' ? [spec.headDim] : [])))];
}

test('every Gemma 4 fixture\'s KV layout passes the CUDA guard in every cache dtype', () => {
  const fixtures = readdirSync(FIXTURES_DIR).filter((name) => name.startsWith('gemma4-'));
  assert.ok(fixtures.length > 0, `no gemma4-* fixtures under ${FIXTURES_DIR}`);
  for (const name of fixtures) {
    const path = join(FIXTURES_DIR, name, 'config.json');
    const layers = kvLayers(JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>, path);
    // Sliding and full layers of different head dims: the guard sees both.
    assert.ok(attentionHeadDims(layers).length >= 2, `${name}: expected sliding and full layers of different head dims`);
    for (const dtype of DTYPES) assert.doesNotThrow(() => checkCudaKvLayout(layout(layers, dtype)), `${name} ${dtype}`);
  }
});

test('a Gemma 4 of the released shapes (sliding layers of 256, full layers of 512) passes the CUDA guard', () => {
  const layers = kvLayers(
    {
      model_type: 'gemma4_text',
      hidden_size: 256,
      intermediate_size: 512,
      num_hidden_layers: 6,
      num_attention_heads: 8,
      num_key_value_heads: 4,
      head_dim: 256,
      global_head_dim: 512,
      num_global_key_value_heads: 1,
      attention_k_eq_v: true,
      hidden_size_per_layer_input: 0,
      sliding_window: 512,
      vocab_size: 128,
    },
    'gemma4 31B-like config.json',
  );
  assert.deepEqual(attentionHeadDims(layers).sort((a, b) => a - b), [256, MAX_CUDA_HEAD_DIM]);
  for (const dtype of DTYPES) assert.doesNotThrow(() => checkCudaKvLayout(layout(layers, dtype)), dtype);
});

test('head dims past the CUDA kernels\' limit or off multiples of 8 fail, naming the limit and the head dim', () => {
  const attention = (headDim: number): LayerKvSpec => ({ kind: 'attention', numKvHeads: 1, headDim, slidingWindow: null });
  for (const headDim of [MAX_CUDA_HEAD_DIM + 8, 1024, 500]) {
    assertInvalidModel(() => checkCudaKvLayout(layout([attention(256), attention(headDim)], 'auto')), `at most ${MAX_CUDA_HEAD_DIM}`, `not ${headDim}`);
  }
  for (const headDim of [8, 264, MAX_CUDA_HEAD_DIM]) assert.doesNotThrow(() => checkCudaKvLayout(layout([attention(headDim)], 'int8')), `head dim ${headDim}`);
});

test('a pool with more token slots than an int32 indexes fails, naming the blocks and the limit', () => {
  const layers: readonly LayerKvSpec[] = [{ kind: 'attention', numKvHeads: 1, headDim: 8, slidingWindow: null }];
  const pool = (numBlocks: number): KvCacheLayout => ({ numBlocks, blockSize: 16, layers, dtype: 'int4' });
  assert.doesNotThrow(() => checkCudaKvLayout(pool(Math.floor(MAX_CUDA_KV_SLOTS / 16))));
  assert.throws(() => checkCudaKvLayout(pool(2 ** 27)), (err: Error) => err.message.includes(`${2 ** 27} blocks of 16 tokens`) && err.message.includes(`${MAX_CUDA_KV_SLOTS}`));
});
