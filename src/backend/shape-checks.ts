import type { BatchDescription } from '../step/batch.ts';
import type { AttentionKvSpec, KvCacheLayout, MlaKvSpec } from '../step/kv-cache-layout.ts';
import type { AttentionParams, MlaParams } from './backend.ts';

/** Checks shared by every backend's attention ops: a mismatch here is a bug in the caller. */
export function assertPackedQkvWidth(cols: number, attn: AttentionParams): void {
  const width = (attn.numHeads + 2 * attn.numKvHeads) * attn.headDim;
  if (cols !== width) throw new Error(`qkv has ${cols} columns, the attention shape needs ${width}`);
}

/** The layer's KV spec, checked to be an attention layer holding the heads `attn` reads. */
export function attentionKvLayer(layout: KvCacheLayout, layer: number, attn: AttentionParams): AttentionKvSpec {
  const spec = layout.layers[layer];
  if (spec === undefined) throw new RangeError(`layer ${layer} is outside the cache's ${layout.layers.length} layers`);
  if (spec.kind !== 'attention') throw new Error(`KV cache layer ${layer} holds ${spec.kind} rows, not attention keys and values`);
  if (spec.numKvHeads !== attn.numKvHeads || spec.headDim !== attn.headDim) {
    throw new Error(`KV cache layer ${layer} holds ${spec.numKvHeads} heads of ${spec.headDim}, attention needs ${attn.numKvHeads} of ${attn.headDim}`);
  }
  return spec;
}

/** Every token a step reads from the previous sampling pass must be among its `previousDraws` draws. */
export function assertTokenSources(batch: BatchDescription, previousDraws: number): void {
  for (const source of batch.tokenSources) {
    if (source >= previousDraws) throw new RangeError(`token source ${source} is outside the ${previousDraws} draws of the last sampling pass`);
  }
}

/** The layer's KV spec, checked to be an MLA layer holding rows of the widths `mla` reads. */
export function mlaKvLayer(layout: KvCacheLayout, layer: number, mla: MlaParams): MlaKvSpec {
  const spec = layout.layers[layer];
  if (spec === undefined) throw new RangeError(`layer ${layer} is outside the cache's ${layout.layers.length} layers`);
  if (spec.kind !== 'mla') throw new Error(`KV cache layer ${layer} holds attention keys and values, not MLA rows`);
  if (spec.latentDim !== mla.latentDim || spec.ropeDim !== mla.ropeDim) {
    throw new Error(`KV cache layer ${layer} holds MLA rows of ${spec.latentDim} + ${spec.ropeDim}, attention needs ${mla.latentDim} + ${mla.ropeDim}`);
  }
  return spec;
}
