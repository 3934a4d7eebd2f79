/**
 * What each layer keeps in the paged KV cache, declared by its attention layer (layers/) and read
 * by the block manager and the backends alike: nobody else computes KV sizes.
 */
export type LayerKvSpec = AttentionKvSpec | MlaKvSpec | RowsKvSpec;

/** Keys and values of `numKvHeads` heads; a sliding window reads only the latest `slidingWindow` positions. */
export interface AttentionKvSpec {
  kind: 'attention';
  numKvHeads: number;
  headDim: number;
  slidingWindow: number | null;
  /**
   * Quest's per-block key summaries (`--sparse-attention quest`): each block also keeps, per kv
   * head, the per-channel minimum and maximum of its keys, `keySummaryElementsPerBlock` values in
   * the backend's activation dtype. Absent: none.
   */
  keySummaries?: boolean;
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
 * One row of `width` values per token that no attention reads: the hidden states a speculative
 * head drafts from (EAGLE, MTP), kept per slot so that they follow the tokens' blocks (copy-on-write,
 * tree compaction, swaps) and outlive the step that computed them. Rows are always kept in the
 * backend's activation dtype, whatever the cache's `dtype` (see `kvLayerDtype`).
 */
export interface RowsKvSpec {
  kind: 'rows';
  width: number;
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

/**
 * The dtype one layer's pool is stored in: the cache's for keys and values (attention, MLA), the
 * activation dtype for a head's rows, which are hidden states fed back to a network, not K/V an
 * attention kernel dequantizes, and which have no per-layer scale a checkpoint could give.
 */
export function kvLayerDtype(spec: LayerKvSpec, dtype: KvCacheDtype): KvCacheDtype {
  return spec.kind === 'rows' ? 'auto' : dtype;
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
  if (kvLayerDtype(spec, dtype) !== 'int8') return 0;
  return spec.kind === 'attention' ? 2 * spec.numKvHeads : 1;
}

/** Elements one token occupies in a layer's pool (keys and values together). */
export function kvElementsPerToken(spec: LayerKvSpec): number {
  if (spec.kind === 'attention') return 2 * spec.numKvHeads * spec.headDim;
  return spec.kind === 'mla' ? spec.latentDim + spec.ropeDim : spec.width;
}

/**
 * Bytes one cached token holds across all layers: `autoElementBytes` (the backend's activation
 * dtype) a value in a layer stored as `auto`, one byte a code with the 8-bit dtypes plus int8's scales.
 */
export function kvBytesPerToken(layers: readonly LayerKvSpec[], autoElementBytes: number, dtype: KvCacheDtype = 'auto'): number {
  return layers.reduce((bytes, spec) => {
    const elementBytes = kvLayerDtype(spec, dtype) === 'auto' ? autoElementBytes : 1;
    return bytes + kvElementsPerToken(spec) * elementBytes + kvScalesPerToken(spec, dtype) * 4;
  }, 0);
}

/**
 * Values of one block's key summaries in a layer (`AttentionKvSpec.keySummaries`): per kv head, the
 * minimum of each channel over the block's keys, then the maximum; 0 for a layer without them.
 */
export function keySummaryElementsPerBlock(spec: LayerKvSpec): number {
  return spec.kind === 'attention' && spec.keySummaries === true ? 2 * spec.numKvHeads * spec.headDim : 0;
}

/** A block's bytes in every layer: its tokens' K/V (and int8 scales), plus its key summaries, kept in the activation dtype. */
export function kvBytesPerBlock(layers: readonly LayerKvSpec[], blockSize: number, autoElementBytes: number, dtype: KvCacheDtype = 'auto'): number {
  const summaries = layers.reduce((n, spec) => n + keySummaryElementsPerBlock(spec), 0);
  return blockSize * kvBytesPerToken(layers, autoElementBytes, dtype) + summaries * autoElementBytes;
}

/**
 * Quest-style sparse decode attention (Tang et al., "Quest: Query-Aware Sparsity for Efficient
 * Long-Context LLM Inference", ICML 2024; docs/long-context.md). A query token alone in its
 * sequence's chunk (a decode) attends to `tokenBudget / blockSize` (rounded down) whole blocks of
 * its sequence: the first `ceil(sinkTokens / blockSize)` (attention sinks), the last
 * `ceil(windowTokens / blockSize)` (the recent window, the token's own block included), and those
 * of the rest whose keys can score highest against it, by Quest's upper bound
 * Σ_c max(q_c · min_c, q_c · max_c) over the block's key summaries, summed over the query heads
 * that share a kv head (ties go to the earlier block). A sequence of no more blocks than that
 * attends to all of them, as dense attention does. Longer chunks (prefill) attend densely.
 */
export interface SparseAttention {
  tokenBudget: number;
  sinkTokens: number;
  windowTokens: number;
}

/** Blocks a sparse decode attends to in all, and of them the sinks and the recent window it always keeps. */
export function sparseBlockCounts(sparse: SparseAttention, blockSize: number): { budget: number; sinks: number; window: number } {
  return {
    budget: Math.floor(sparse.tokenBudget / blockSize),
    sinks: Math.ceil(sparse.sinkTokens / blockSize),
    window: Math.ceil(sparse.windowTokens / blockSize),
  };
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
    // A head's rows sit beside its own attention layer, whose window decides what is kept.
    if (spec.kind === 'rows') continue;
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