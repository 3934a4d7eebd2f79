import type { BatchDescription, KvCacheSpec } from '../engine/batch.ts';
import type { AttentionShape } from './backend.ts';

/** Checks shared by every backend's attention ops: a mismatch here is a bug in the caller. */
export function assertPackedQkvWidth(cols: number, shape: AttentionShape): void {
  const width = (shape.numHeads + 2 * shape.numKvHeads) * shape.headDim;
  if (cols !== width) throw new Error(`qkv has ${cols} columns, the attention shape needs ${width}`);
}

export function assertKvLayer(spec: KvCacheSpec, layer: number, shape: AttentionShape): void {
  if (spec.numKvHeads !== shape.numKvHeads || spec.headDim !== shape.headDim) {
    throw new Error(`KV cache holds ${spec.numKvHeads} heads of ${spec.headDim}, attention needs ${shape.numKvHeads} of ${shape.headDim}`);
  }
  if (!(layer >= 0 && layer < spec.numLayers)) throw new RangeError(`layer ${layer} is outside the cache's ${spec.numLayers} layers`);
}

/** Every token a step reads from the previous sampling pass must be among its `previousDraws` draws. */
export function assertTokenSources(batch: BatchDescription, previousDraws: number): void {
  for (const source of batch.tokenSources) {
    if (source >= previousDraws) throw new RangeError(`token source ${source} is outside the ${previousDraws} draws of the last sampling pass`);
  }
}
