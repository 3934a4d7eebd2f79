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

/**
 * How cached keys and values are stored (docs/quantization.md, "KV cache"):
 *
 * - `auto`: the backend's activation dtype (float32 on the CPU backend, bf16 on CUDA);
 * - `fp8_e4m3`: one e4m3 code a value, x / scale rounded to nearest even and saturated at ±448,
 *   with one float32 scale per layer for keys and one for values (`AttentionParams.kvScales`: the
 *   checkpoint's `k_scale` / `v_scale`, else 1, as vLLM does);
 * - `int8`: one symmetric code −127..127 a value, with a float32 scale max|x| / 127 per (token,
 *   kv head) for keys and for values each (per token for an MLA row), computed as the token is
 *   written, so it needs no calibration.
 */
export type KvCacheDtype = 'auto' | 'fp8_e4m3' | 'int8';

/** What `--kv-cache-dtype` accepts (vLLM's names; `fp8` means `fp8_e4m3`). */
export const KV_CACHE_DTYPE_NAMES = ['auto', 'fp8', 'fp8_e4m3', 'int8'] as const;
export type KvCacheDtypeName = (typeof KV_CACHE_DTYPE_NAMES)[number];

export function resolveKvCacheDtype(name: KvCacheDtypeName): KvCacheDtype {
  return name === 'fp8' ? 'fp8_e4m3' : name;
}

/** The pool every layer shares: block ids index each layer's pool alike, so a request keeps one block table. */
export interface KvCacheLayout {
  numBlocks: number;
  blockSize: number;
  /** Model layers firstLayer, firstLayer + 1, ...: a pipeline stage's cache holds only its own. */
  layers: readonly LayerKvSpec[];
  /** How every layer stores its keys and values; absent means `auto`. */
  dtype?: KvCacheDtype;
  /** Absent: 0. */
  firstLayer?: number;
}

/** Where model layer `layer` sits in `layout.layers`; a RangeError for a layer the cache does not hold. */
export function layoutIndex(layout: KvCacheLayout, layer: number): number {
  const first = layout.firstLayer ?? 0;
  const index = layer - first;
  if (!(index >= 0 && index < layout.layers.length)) throw new RangeError(`layer ${layer} is outside the cache's layers [${first}, ${first + layout.layers.length})`);
  return index;
}

/** Float32 scales int8 keeps per token in a layer's pool: one per kv head for keys and one for values, or one per MLA row. */
export function kvScalesPerToken(spec: LayerKvSpec, dtype: KvCacheDtype): number {
  if (dtype !== 'int8') return 0;
  return spec.kind === 'attention' ? 2 * spec.numKvHeads : 1;
}

/** Elements one token occupies in a layer's pool (keys and values together). */
export function kvElementsPerToken(spec: LayerKvSpec): number {
  return spec.kind === 'attention' ? 2 * spec.numKvHeads * spec.headDim : spec.latentDim + spec.ropeDim;
}

/**
 * Bytes one cached token holds across all layers: `autoElementBytes` (the backend's activation
 * dtype) a value with `auto`, one byte a code with the 8-bit dtypes plus int8's scales.
 */
export function kvBytesPerToken(layers: readonly LayerKvSpec[], autoElementBytes: number, dtype: KvCacheDtype = 'auto'): number {
  const elementBytes = dtype === 'auto' ? autoElementBytes : 1;
  return layers.reduce((bytes, spec) => bytes + kvElementsPerToken(spec) * elementBytes + kvScalesPerToken(spec, dtype) * 4, 0);
}

export function kvBytesPerBlock(layers: readonly LayerKvSpec[], blockSize: number, autoElementBytes: number, dtype: KvCacheDtype = 'auto'): number {
  return blockSize * kvBytesPerToken(layers, autoElementBytes, dtype);
}

/**
 * StreamingLLM (Xiao et al., "Efficient Streaming Language Models with Attention Sinks"): a query
 * attends to the first `sinks` positions of its sequence and to its latest `window` positions
 * (itself included), with positions assigned inside that cache, so a sequence can run past the
 * model's trained context. docs/long-context.md has the whole story.
 */
export interface StreamingWindow {
  sinks: number;
  window: number;
}

/**
 * The positions some layer still reads behind a token: the first `sinks` of the sequence and the
 * latest `window` (the token's own included). Blocks holding neither can be freed.
 */
export interface KvRetention {
  sinks: number;
  window: number;
}

/**
 * What the layers read of a sequence's past, or null when some layer reads all of it. Without
 * streaming that is the widest sliding window when every layer slides. With streaming, a layer
 * whose own window is no wider than the streaming window reads only its window; any other layer
 * reads the sinks and the streaming window.
 */
export function kvRetention(layers: readonly LayerKvSpec[], streaming: StreamingWindow | null): KvRetention | null {
  if (layers.length === 0) return null;
  let widest = 0;
  let sinks = 0;
  for (const spec of layers) {
    const own = spec.kind === 'attention' ? spec.slidingWindow : null;
    if (streaming !== null && (own === null || own > streaming.window)) {
      widest = Math.max(widest, streaming.window);
      sinks = streaming.sinks;
    } else if (own === null) {
      return null;
    } else {
      widest = Math.max(widest, own);
    }
  }
  return { sinks, window: widest };
}