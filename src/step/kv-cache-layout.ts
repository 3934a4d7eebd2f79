import { invalidArgument } from '../errors.ts';

/**
 * What each layer keeps in the paged KV cache, declared by its attention layer (layers/) and read
 * by the block manager and the backends alike: nobody else computes KV sizes.
 */
export type LayerKvSpec = AttentionKvSpec | MlaKvSpec | RowsKvSpec | SequenceStateSpec;

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
  /**
   * The layer caches nothing of its own and reads the keys and values of the layer this many places
   * before it in the layout, whose spec it repeats (Gemma 4's KV-shared layers): it stores in that
   * layer's pool (`kvStorage`) and reads through that layer's block tables (`kvCacheGroups`), so
   * paging, prefix caching, copy-on-write and swaps move its keys with that layer's. Absent: its own.
   */
  sharedKvDistance?: number;
}

/**
 * Multi-head latent attention (DeepSeek): one shared row per token, the normalized latent
 * (`latentDim`) followed by the rotated key part (`ropeDim`); keys and values are both read from it.
 */
export interface MlaKvSpec {
  kind: 'mla';
  latentDim: number;
  ropeDim: number;
  /**
   * DeepSeek-V3.2's sparse attention: the lightning indexer's key of each token (`IndexKeysSpec`),
   * kept in a pool of its own beside the latent rows. Absent: dense MLA.
   */
  indexKeys?: IndexKeysSpec;
}

/**
 * The lightning indexer's per-token key (DeepSeek Sparse Attention): `keyDim` values, normalized and
 * rotated, scored against every later query of the sequence to pick the positions its MLA attends
 * to. Stored in the cache's `dtype` (`kvLayerDtype`), an 8-bit key with a float32 scale of its own
 * (`indexKeyScalesPerToken`): int8 codes at max|k| / 127, or e4m3 codes at max|k| / 448 (DeepSeek's
 * own format for these keys; the MLA rows of an fp8 cache keep scale 1). Indexed by slot like the
 * rows, so block tables, prefix caching, copy-on-write and swaps move them with the latent.
 */
export interface IndexKeysSpec {
  keyDim: number;
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
 * A layer that keeps a fixed-size state per sequence instead of entries per token (linear
 * attention: Gated DeltaNet): `convElements` values of its short causal convolution's latest
 * inputs and `recurrentElements` of its recurrent matrix, float32 on every backend (transformers
 * keeps the recurrent state in float32), in one of the cache's `stateSlots` slots. A running
 * sequence holds one slot (`BatchDescription.stateSlots`) from its first step until it finishes
 * or is preempted; a chunk starting at position 0 starts from a zero state. It holds nothing per
 * token, so its paged pool is empty and a block costs it nothing.
 */
export interface SequenceStateSpec {
  kind: 'state';
  convElements: number;
  recurrentElements: number;
}

/** Whether some layer keeps a per-sequence state (`SequenceStateSpec`): its sequences' history lives in no block. */
export function keepsSequenceState(layers: readonly LayerKvSpec[]): boolean {
  return layers.some((spec) => spec.kind === 'state');
}

/** Bytes one state slot holds across `layers`: each state layer's conv and recurrent values, float32. */
export function stateBytesPerSlot(layers: readonly LayerKvSpec[]): number {
  return layers.reduce((bytes, spec) => bytes + (spec.kind === 'state' ? 4 * (spec.convElements + spec.recurrentElements) : 0), 0);
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
 *   written, so it needs no calibration;
 * - `int4`: two 4-bit codes a byte (element 2i in the low nibble), asymmetric: per (token, kv head)
 *   of keys and of values, a float32 scale (max − min) / 15 and the minimum, each x kept as
 *   round((x − min) / scale) · scale + min, as LMDeploy's int4 cache keeps them. Attention layers
 *   only: an MLA row (one shared latent a token, read by every head) takes the 8-bit dtypes.
 */
export type KvCacheDtype = 'auto' | 'fp8_e4m3' | 'int8' | 'int4';

/** What `--kv-cache-dtype` accepts (vLLM's names; `fp8` means `fp8_e4m3`; `int4` is Keel's own). */
export const KV_CACHE_DTYPE_NAMES = ['auto', 'fp8', 'fp8_e4m3', 'int8', 'int4'] as const;
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
  if (spec.kind === 'mla' && dtype === 'int4') {
    throw invalidArgument('an int4 KV cache stores attention layers\' keys and values; multi-head latent attention (MLA) rows take --kv-cache-dtype fp8 or int8');
  }
  return spec.kind === 'rows' || spec.kind === 'state' ? 'auto' : dtype;
}

/**
 * The pool every layer shares: block ids name blocks of one id space, each block owned by one KV
 * group at a time (`kvCacheGroups`), and a sequence keeps one block table per group.
 */
export interface KvCacheLayout {
  numBlocks: number;
  blockSize: number;
  /** Model layers firstLayer, firstLayer + 1, ...: a pipeline stage's cache holds only its own. */
  layers: readonly LayerKvSpec[];
  /** The KV group of each of `layers` (`kvCacheGroups`); absent: every layer is in group 0. */
  groups?: readonly number[];
  /** How every layer stores its keys and values; absent means `auto`. */
  dtype?: KvCacheDtype;
  /** Absent: 0. */
  firstLayer?: number;
  /** Per-sequence state slots of the layers that keep one (`SequenceStateSpec`); absent: 0. */
  stateSlots?: number;
}

/** The KV group of model layer `layer` of the layout: whose block table and slots it reads. */
export function layerGroup(layout: KvCacheLayout, layer: number): number {
  return layout.groups?.[layoutIndex(layout, layer)] ?? 0;
}

/** Where model layer `layer` sits in `layout.layers`; a RangeError for a layer the cache does not hold. */
export function layoutIndex(layout: KvCacheLayout, layer: number): number {
  const first = layout.firstLayer ?? 0;
  const index = layer - first;
  if (!(index >= 0 && index < layout.layers.length)) throw new RangeError(`layer ${layer} is outside the cache's layers [${first}, ${first + layout.layers.length})`);
  return index;
}

/**
 * Float32 scales a token keeps in a layer's pools: with int8, one per kv head for keys and one for
 * values, or one per MLA row; with int4, a scale and a minimum per kv head for each; with either
 * 8-bit dtype, one per indexer key (`indexKeyScalesPerToken`).
 */
export function kvScalesPerToken(spec: LayerKvSpec, dtype: KvCacheDtype): number {
  const keyScales = indexKeyScalesPerToken(spec, dtype);
  const layerDtype = kvLayerDtype(spec, dtype);
  if (layerDtype === 'int4' && spec.kind === 'attention') return 4 * spec.numKvHeads;
  if (layerDtype !== 'int8') return keyScales;
  return spec.kind === 'attention' ? 2 * spec.numKvHeads : 1 + keyScales;
}

/** Of `kvScalesPerToken`, the indexer key's: 1 for a sparse MLA layer in an 8-bit cache, else 0. */
export function indexKeyScalesPerToken(spec: LayerKvSpec, dtype: KvCacheDtype): number {
  return indexKeyElementsPerToken(spec) > 0 && kvLayerDtype(spec, dtype) !== 'auto' ? 1 : 0;
}

/** Elements one token occupies in a layer's K/V pools (keys and values together, or the MLA row), in the cache's dtype. */
export function kvElementsPerToken(spec: LayerKvSpec): number {
  if (spec.kind === 'attention') return 2 * spec.numKvHeads * spec.headDim;
  if (spec.kind === 'state') return 0;
  return spec.kind === 'mla' ? spec.latentDim + spec.ropeDim : spec.width;
}

/** Elements of the lightning indexer's key a token keeps beside its MLA row (in the cache's dtype); 0 for other layers. */
export function indexKeyElementsPerToken(spec: LayerKvSpec): number {
  return spec.kind === 'mla' ? (spec.indexKeys?.keyDim ?? 0) : 0;
}

/**
 * Where `layers[index]` keeps its keys and values: its own index, or for a KV-shared layer
 * (`AttentionKvSpec.sharedKvDistance`) that of the layer it reads, which must be an attention
 * layer of the same kv heads and head dim that caches its own.
 */
export function kvSourceIndex(layers: readonly LayerKvSpec[], index: number): number {
  const spec = layers[index];
  if (spec.kind !== 'attention' || spec.sharedKvDistance === undefined) return index;
  const source = index - spec.sharedKvDistance;
  const target = layers[source];
  if (
    !(spec.sharedKvDistance > 0 && source >= 0) ||
    target.kind !== 'attention' ||
    target.sharedKvDistance !== undefined ||
    target.numKvHeads !== spec.numKvHeads ||
    target.headDim !== spec.headDim
  ) {
    throw new Error(`KV layout: layer ${index} shares the keys and values of layer ${source}, which is not an attention layer of its kv heads and head dim caching its own`);
  }
  return source;
}

/**
 * Bytes one cached token holds across `layers` (each one's own pool; a KV-shared layer none): `autoElementBytes` (the
 * backend's activation dtype) a value in a layer stored as `auto`, one byte a code with the 8-bit
 * dtypes plus int8's scales; an indexer key is stored like its layer's row.
 */
export function kvBytesPerToken(layers: readonly LayerKvSpec[], autoElementBytes: number, dtype: KvCacheDtype = 'auto'): number {
  return layers.reduce(
    (bytes, spec, i) => (kvSourceIndex(layers, i) !== i ? bytes : bytes + attendedBytesPerToken(spec, autoElementBytes, dtype) + indexKeyBytesPerToken(spec, autoElementBytes, dtype)),
    0,
  );
}

/** Of `kvBytesPerToken`, one layer's keys and values (or MLA row) with their int8 scales: what its attention reads of each position it attends to. */
export function attendedBytesPerToken(spec: LayerKvSpec, autoElementBytes: number, dtype: KvCacheDtype = 'auto'): number {
  const rowScales = kvScalesPerToken(spec, dtype) - indexKeyScalesPerToken(spec, dtype);
  return kvElementsPerToken(spec) * kvElementBytes(spec, autoElementBytes, dtype) + rowScales * 4;
}

/** Of `kvBytesPerToken`, the lightning indexer's key with its scale, stored like its layer's row: what the indexer reads of each cached position. */
export function indexKeyBytesPerToken(spec: LayerKvSpec, autoElementBytes: number, dtype: KvCacheDtype = 'auto'): number {
  return indexKeyElementsPerToken(spec) * kvElementBytes(spec, autoElementBytes, dtype) + indexKeyScalesPerToken(spec, dtype) * 4;
}

/** Bytes of one value in a layer's pools (kvValueBytes of the layer's dtype). */
function kvElementBytes(spec: LayerKvSpec, autoElementBytes: number, dtype: KvCacheDtype): number {
  return kvValueBytes(kvLayerDtype(spec, dtype), autoElementBytes);
}

/** Bytes of one cached value in `dtype`: `autoElementBytes` stored as `auto`, one byte a code in the 8-bit dtypes, half a byte in int4. */
export function kvValueBytes(dtype: KvCacheDtype, autoElementBytes: number): number {
  return dtype === 'auto' ? autoElementBytes : dtype === 'int4' ? 0.5 : 1;
}

/**
/**
 * Values of one block's key summaries in a layer's pool (`AttentionKvSpec.keySummaries`): per kv
 * head, the minimum of each channel over the block's keys, then the maximum; 0 for a pool without them.
 */
export function keySummaryElementsPerBlock(spec: LayerKvSpec): number {
  return spec.kind === 'attention' && spec.keySummaries === true ? 2 * spec.numKvHeads * spec.headDim : 0;
}

/**
 * The pools a cache allocates, each `numBlocks` blocks, and the pool each layer reads and writes.
 * Layers of different KV groups that store the same (kind and dimensions) share a pool: a block belongs to one group at a
 * time, so at any block id only that group's layers touch the pool. Within a group every layer has
 * a pool of its own; a cache of one group has one pool a layer, in layer order. A pool keeps key
 * summaries when any layer stored in it does (a sparse full-attention layer sharing with sliding
 * ones): they are per block like the keys, so they travel with the block whichever group holds it,
 * and the sparse layer recomputes a block's summaries from offset 0 as it writes the block, so
 * what another group's tenancy left there is never read.
 */
export interface KvStorage {
  /** The spec of each pool (that of every layer stored in it, with key summaries if any of them keeps them). */
  pools: LayerKvSpec[];
  /** The pool of each of the layout's layers. */
  poolOf: number[];
}

export function kvStorage(layers: readonly LayerKvSpec[], groups?: readonly number[]): KvStorage {
  if (groups !== undefined && groups.length !== layers.length) throw new Error(`KV layout: ${groups.length} group ids for ${layers.length} layers`);
  const pools: LayerKvSpec[] = [];
  const poolOf: number[] = [];
  // Per (group, spec), how many of the group's layers of that spec came before; per (spec, rank), its pool.
  const seen = new Map<string, number>();
  const byRank = new Map<string, number>();
  layers.forEach((spec, i) => {
    const source = kvSourceIndex(layers, i);
    if (source !== i) {
      poolOf.push(poolOf[source]);
      return;
    }
    const shape = storedShape(spec);
    const groupKey = `${groups?.[i] ?? 0}/${shape}`;
    const rank = seen.get(groupKey) ?? 0;
    seen.set(groupKey, rank + 1);
    const poolKey = `${rank}/${shape}`;
    let pool = byRank.get(poolKey);
    if (pool === undefined) {
      pool = pools.push(spec) - 1;
      byRank.set(poolKey, pool);
    } else if (spec.kind === 'attention' && spec.keySummaries === true) {
      pools[pool] = { ...(pools[pool] as AttentionKvSpec), keySummaries: true };
    }
    poolOf.push(pool);
  });
  return { pools, poolOf };
}

/** What a layer's pool stores, whatever window it reads through and whether it keeps key summaries. */
function storedShape(spec: LayerKvSpec): string {
  return JSON.stringify(spec.kind === 'attention' ? { ...spec, slidingWindow: null, keySummaries: undefined } : spec);
}

/**
 * Bytes one block holds in every pool of a cache with these layers and groups (`kvStorage`): its
 * tokens' K/V (and int8 scales), plus the key summaries of the pools that keep them, stored in the
 * activation dtype.
 */
export function kvBytesPerBlock(layers: readonly LayerKvSpec[], blockSize: number, autoElementBytes: number, dtype: KvCacheDtype = 'auto', groups?: readonly number[]): number {
  const { pools } = kvStorage(layers, groups);
  const summaries = pools.reduce((n, spec) => n + keySummaryElementsPerBlock(spec), 0);
  return blockSize * kvBytesPerToken(pools, autoElementBytes, dtype) + summaries * autoElementBytes;
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

/**
 * How a sparse layer's decode chooses the cached positions it attends to, for cost models: Quest's
 * blocks, ranked by their key summaries (`SparseAttention`), or DeepSeek Sparse Attention's `topK`
 * positions, ranked by the lightning indexer over every cached index key (or, in a layer without
 * an indexer of its own, as the layer before it chose).
 */
export type DecodeSelection = { kind: 'quest'; sparse: SparseAttention } | { kind: 'top-k'; topK: number };

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
 * What one layer reads of a sequence's past, or null for all of it. Without streaming: its sliding
 * window, if any. With streaming, a layer whose own window is no wider than the streaming window
 * reads only its window; any other layer reads the sinks and the streaming window. A head's rows
 * are read at every computed position a draft may start from: kept whole. A state layer reads no
 * block: it is retained as a full layer, so it joins the full layers' group, which keeps one block
 * table for both (under streaming the sinks' and window's).
 */
export function layerRetention(spec: LayerKvSpec, streaming: StreamingWindow | null): KvRetention | null {
  const own = spec.kind === 'attention' ? spec.slidingWindow : null;
  if (spec.kind === 'rows') return null;
  if (streaming !== null && (own === null || own > streaming.window)) return { sinks: streaming.sinks, window: streaming.window };
  return own === null ? null : { sinks: 0, window: own };
}

/**
 * Layers grouped by what they read of a sequence's past (vLLM's hybrid KV cache manager): each
 * group keeps a block table of its own per sequence, so a sliding-window group frees the blocks
 * behind its window while a full-attention group keeps every block, all from one pool. Layers of
 * one retention are split into groups as large as the smallest retention's layer count, so that
 * every group stores about as many layers a block: the groups' layers then share pools
 * (`kvStorage`) and a block costs the same whichever group holds it. A model whose layers all read
 * the same (every full-attention model) is one group.
 */
export interface KvCacheGroups {
  /** What each group's layers read (null: everything). */
  retentions: (KvRetention | null)[];
  /** The group of each layer given. */
  groupOf: number[];
}

export function kvCacheGroups(layers: readonly LayerKvSpec[], streaming: StreamingWindow | null): KvCacheGroups {
  const keyOf = (r: KvRetention | null) => (r === null ? 'full' : `${r.sinks}/${r.window}`);
  const kinds = new Map<string, { retention: KvRetention | null; layers: number[] }>();
  // A KV-shared layer stores nothing: it reads through the block tables of the layer it shares.
  const sources = layers.map((_, i) => kvSourceIndex(layers, i));
  layers.forEach((spec, i) => {
    if (sources[i] !== i) return;
    const retention = layerRetention(spec, streaming);
    const key = keyOf(retention);
    if (!kinds.has(key)) kinds.set(key, { retention, layers: [] });
    kinds.get(key)!.layers.push(i);
  });
  const size = Math.min(...[...kinds.values()].map((kind) => kind.layers.length));
  const retentions: (KvRetention | null)[] = [];
  const groupOf = new Array<number>(layers.length);
  // Groups pay off where they share pools (kvStorage), a block then holding one group's layers. Where
  // no shape is stored under two retentions (Gemma 4's sliding and full layers differ in head dim and
  // kv heads), no pool is shared: a block would hold every pool whichever group owned it, and more
  // tables only take more blocks. Such a model keeps one table, retaining what its every layer reads.
  const shapesByKind = [...kinds.values()].map((kind) => new Set(kind.layers.map((i) => storedShape(layers[i]))));
  const shared = shapesByKind.some((shapes, k) => [...shapes].some((shape) => shapesByKind.some((other, j) => j !== k && other.has(shape))));
  if (kinds.size > 1 && !shared) {
    const all = [...kinds.values()].map((kind) => kind.retention);
    const widest = all.includes(null) ? null : { sinks: Math.max(...all.map((r) => r!.sinks)), window: Math.max(...all.map((r) => r!.window)) };
    return { retentions: [widest], groupOf: groupOf.fill(0) };
  }
  for (const { retention, layers: members } of kinds.values()) {
    for (let start = 0; start < members.length; start += size) {
      for (const i of members.slice(start, start + size)) groupOf[i] = retentions.length;
      retentions.push(retention);
    }
  }
  sources.forEach((source, i) => {
    if (source !== i) groupOf[i] = groupOf[source];
  });
  return { retentions: retentions.length === 0 ? [null] : retentions, groupOf };
}
