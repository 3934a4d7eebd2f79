import type { AttentionParams } from '../../src/backend/backend.ts';
import type { KvCacheLayout } from '../../src/step/kv-cache-layout.ts';

/** A pool of `numLayers` full-attention layers alike, as a test's kernels need it. */
export function attentionLayout(spec: { numLayers: number; numBlocks: number; blockSize: number; numKvHeads: number; headDim: number; slidingWindow?: number | null }): KvCacheLayout {
  const layer = { kind: 'attention' as const, numKvHeads: spec.numKvHeads, headDim: spec.headDim, slidingWindow: spec.slidingWindow ?? null };
  return { numBlocks: spec.numBlocks, blockSize: spec.blockSize, layers: Array.from({ length: spec.numLayers }, () => layer) };
}

/** Plain attention parameters: no soft-capping, no sinks. */
export function plainAttention(shape: Pick<AttentionParams, 'numHeads' | 'numKvHeads' | 'headDim' | 'scale' | 'slidingWindow'>): AttentionParams {
  return { ...shape, softcap: null, sinks: null, streaming: null };
}
