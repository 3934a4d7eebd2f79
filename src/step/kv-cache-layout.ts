/**
 * What each layer keeps in the paged KV cache, declared by its attention layer (layers/) and read
 * by the block manager and the backends alike: nobody else computes KV sizes.
 */
export type LayerKvSpec = AttentionKvSpec | MlaKvSpec;

/** Keys and values of `numKvHeads` heads; a sliding window reads only the latest `slidingWindow` positions. */
export interface AttentionKvSpec {
  kind: 'attention';
  numKvHeads: number;
  headDim: number;
  slidingWindow: number | null;
}

/**
 * Multi-head latent attention (DeepSeek): one shared row per token, the normalized latent
 * (`latentDim`) followed by the rotated key part (`ropeDim`); keys and values are both read from it.
 */
export interface MlaKvSpec {
  kind: 'mla';
  latentDim: number;
  ropeDim: number;
}

/** The pool every layer shares: block ids index each layer's pool alike, so a request keeps one block table. */
export interface KvCacheLayout {
  numBlocks: number;
  blockSize: number;
  layers: readonly LayerKvSpec[];
}

/** Elements one token occupies in a layer's pool (keys and values together). */
export function kvElementsPerToken(spec: LayerKvSpec): number {
  return spec.kind === 'attention' ? 2 * spec.numKvHeads * spec.headDim : spec.latentDim + spec.ropeDim;
}

/** Bytes one cached token holds across all layers. */
export function kvBytesPerToken(layers: readonly LayerKvSpec[], elementBytes: number): number {
  return layers.reduce((bytes, spec) => bytes + kvElementsPerToken(spec) * elementBytes, 0);
}

export function kvBytesPerBlock(layers: readonly LayerKvSpec[], blockSize: number, elementBytes: number): number {
  return blockSize * kvBytesPerToken(layers, elementBytes);
}

/**
 * How many latest positions some layer still reads, or null when a layer reads the whole context:
 * blocks wholly older than this are read by no layer and can be freed.
 */
export function kvRetentionWindow(layers: readonly LayerKvSpec[]): number | null {
  let widest = 0;
  for (const spec of layers) {
    if (spec.kind !== 'attention' || spec.slidingWindow === null) return null;
    widest = Math.max(widest, spec.slidingWindow);
  }
  return layers.length === 0 ? null : widest;
}
