import type { Communicator } from '../parallel/communicator.ts';
import type { Draw, DrawResults } from '../sampling/draw.ts';
import type { BatchDescription } from '../step/batch.ts';
import type { KvCacheLayout, SparseAttention } from '../step/kv-cache-layout.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import type { Mxfp4Weight } from '../tensor/mxfp4.ts';
import type { QuantizedWeight } from '../tensor/quantized-weight.ts';
import type { Sparse24Weight } from '../tensor/sparse24.ts';

/**
 * A tensor owned by a backend: row-major and contiguous. The CPU backend holds a Float32Array,
 * the CUDA backend a device pointer in its compute dtype. Model code never looks inside.
 */
export interface Tensor {
  readonly shape: readonly number[];
}

/** Opaque paged pools, one per layer, shaped by the layout's per-layer specs. */
export interface KvCache {
  readonly layout: KvCacheLayout;
}

/**
 * Host memory that KV blocks are copied out to and back in from (preemption by swap, and the
 * prefix cache's host tier; docs/long-context.md): `layout.numBlocks` host blocks, each holding
 * what a device block holds in every pool of the cache it serves, whatever pools its layout has.
 * The CUDA backend's is pinned memory.
 */
export interface SwapSpace {
  readonly layout: KvCacheLayout;
}

/**
 * Weights kept in host memory (pinned, on CUDA) and copied to the device just before use (weight
 * offload, docs/long-context.md): numbered groups of weights (a model's layers), fetched in
 * order. Group g's weights are read from device buffers that the groups of g's parity share, so
 * two groups are on the device at once: the one in use and the next, being copied.
 */
export interface WeightStream {
  /** Bytes of the groups' weights kept in host memory. */
  readonly hostBytes: number;
  /** Bytes of the device buffers the groups are fetched into. */
  readonly deviceBytes: number;
}

/**
 * Rotary tables indexed by absolute position: `cos`/`sin` are [maxPositions, rotaryDim / 2]
 * (HF "rotate_half" layout: dimension i pairs with i + rotaryDim/2; dimensions from rotaryDim on
 * are not rotated). Every RoPE variant, including YaRN's attention factor, is folded into these
 * tables on the host (layers/rotary.ts).
 */
export interface RopeTable {
  maxPositions: number;
  rotaryDim: number;
  cos: Float32Array;
  sin: Float32Array;
}

/** The function of an attention output gate (Backend.multiplyGate): σ(g), or softplus(g) = ln(1 + eᵍ) (g itself past 20, as torch's). */
export type GateFunction = 'sigmoid' | 'softplus';

/** A query's temperature by its position (AttentionParams.queryTemperature, MlaParams.queryTemperature). */
export interface QueryTemperature {
  floorScale: number;
  attnScale: number;
  /** Added to the position before the floor: 1 for Llama 4, 0 for Ministral 3 and Mistral 4. */
  positionOffset: number;
}

/** The factor a query at `position` is scaled by: 1 + attnScale · ln(1 + ⌊(position + positionOffset) / floorScale⌋). */
export function queryTemperatureFactor(t: QueryTemperature, position: number): number {
  return 1 + t.attnScale * Math.log1p(Math.floor((position + t.positionOffset) / t.floorScale));
}

/** One attention layer's geometry and options, as its kernels need them. */
export interface AttentionParams {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Softmax scale, normally headDim ** -0.5. */
  scale: number;
  /** Keys older than `position - slidingWindow + 1` are masked; null attends to everything. */
  slidingWindow: number | null;
  /**
   * Chunked attention (Llama 4's RoPE layers): a query at position p sees only the keys of its
   * chunk, positions p - p % attentionChunk .. p, on top of any other limit. Absent or null: none.
   */
  attentionChunk?: number | null;
  /**
   * Attention temperature tuning: a query at position p is scaled by
   * 1 + attnScale · ln(1 + floor((p + positionOffset) / floorScale)). Llama 4's NoPE layers count
   * positions from 1 (offset 1), Ministral 3's layers from 0. Absent or null: none.
   */
  queryTemperature?: QueryTemperature | null;
  /** Scores become softcap · tanh(score / softcap) before the softmax (Gemma 2); null leaves them. */
  softcap: number | null;
  /** [numHeads] learned logits that join each head's softmax denominator and nothing else (gpt-oss). */
  sinks: Tensor | null;
  /**
   * StreamingLLM (docs/long-context.md), or null. Queries then reach `attention` unrotated
   * (`ropeAndCacheWrite` rotates and caches keys only, at their rotary rows) and `attention`
   * rotates each with `rope` twice: at its rotary row to score the keys of its window, and at row
   * min(position, sinks + window - 1), its position inside the cache, to score the sink keys behind
   * the window. Keys rotated at absolute positions then score as keys at their cache positions,
   * since a rotation at fixed frequencies depends only on the distance (the rows must be the
   * positions, at one set of frequencies: layers/rotary.ts builds such a table).
   * `attentionSpan` says which keys a query sees.
   */
  streaming: { sinks: number; window: number; rope: Tensor } | null;
  /**
   * An fp8 KV cache's per-tensor scales: keys are stored as e4m3(k / k) and read as code · k,
   * values alike with v (the checkpoint's k_scale / v_scale, else 1, as vLLM does). Absent: 1 and
   * 1. Other dtypes ignore them (docs/quantization.md, "KV cache").
   */
  kvScales?: { k: number; v: number };
  /**
   * Quest-style sparse decode attention (`SparseAttention`), or absent/null for dense attention.
   * The layer's KV spec then keeps key summaries, which `ropeAndCacheWrite` keeps current: after
   * writing a token's key it recomputes the summaries of the token's block from the block's keys
   * at offsets up to the token's (as the cache holds them: dequantized codes in an 8-bit cache),
   * once per block and step. Layers with a sliding window and StreamingLLM take none.
   */
  sparse?: SparseAttention | null;
}

/**
 * The keys a query at position p of a layer sees: positions p - window + 1 .. p (all of 0 .. p for
 * a null window), and the sequence's first `sinks` positions. StreamingLLM's sinks and window,
 * unless the layer's own sliding window is no wider: then that window alone, as without streaming.
 */
export function attentionSpan(attn: { slidingWindow: number | null; streaming: { sinks: number; window: number } | null }): { window: number | null; sinks: number } {
  const { slidingWindow, streaming } = attn;
  if (streaming === null || (slidingWindow !== null && slidingWindow <= streaming.window)) return { window: slidingWindow, sinks: 0 };
  return { window: streaming.window, sinks: streaming.sinks };
}

/**
 * Multi-head latent attention in its absorbed form: queries are projected into the latent space,
 * so every head attends over the one cached row per token (layers/mla-attention.ts says how).
 */
/**
 * A per-head RMSNorm of packed qkv heads before their rotation (Qwen3's and Gemma 3's q_norm and
 * k_norm): query heads with `q`, key heads with `k`, and value heads with `v` when given (Gemma 4
 * norms its values, with unit weights); each weight [headDim].
 */
export interface HeadNorm {
  q: Tensor;
  k: Tensor;
  v: Tensor | null;
  eps: number;
}

export interface MlaParams {
  numHeads: number;
  /** Cached normalized latent width (kv_lora_rank). */
  latentDim: number;
  /** Rotated dimensions per query head and in the cached row (qk_rope_head_dim). */
  ropeDim: number;
  /** Unrotated query dimensions per head, before them (qk_nope_head_dim). */
  nopeDim: number;
  /** Softmax scale. */
  scale: number;
  /**
   * Attention temperature tuning (Mistral 4's llama_4_scaling_beta): `mlaRopeAndCacheWrite`
   * multiplies each token's whole query (every head's nope part and rotated rope part) by the
   * factor of its position, after rotating it, as transformers scales the query states. Absent or
   * null: none.
   */
  queryTemperature?: QueryTemperature | null;
}

/** MLA's per-head up-projections, the two halves of kv_b_proj (layers/mla-attention.ts). */
export interface MlaUpProjections {
  /** W_UKᵀ per head, [numHeads, latentDim, nopeDim]: a query's nope part into the latent space. */
  keyAbsorption: Tensor;
  /** W_UV per head, [numHeads, valueDim, latentDim]: a latent back to the head's value. */
  valueAbsorption: Tensor;
}

/**
 * DeepSeek-V3.2's lightning indexer (DeepSeek Sparse Attention; layers/lightning-indexer.ts): each
 * token's `numHeads` queries of `headDim` score every cached indexer key of its sequence, and the
 * MLA attention of the token reads only the `topK` best-scoring positions.
 */
export interface IndexerParams {
  numHeads: number;
  headDim: number;
  /** The leading dimensions of each query head and of the key that are rotated (rotate_half pairs). */
  ropeDim: number;
  /** Positions each token attends to (index_topk); all of them while it sees no more. */
  topK: number;
  /** Multiplies q · k before the ReLU: headDim^-0.5. */
  scale: number;
  /** Multiplies each head's weight: numHeads^-0.5. */
  weightScale: number;
}

/**
 * A step's sparse-attention choice, from `indexerTopK` for `mlaAttention`: per token, `topK`
 * positions of its sequence in increasing order, padded with -1 where it sees fewer.
 */
export interface TokenSelection {
  readonly numTokens: number;
  readonly topK: number;
}

/**
 * One Gated DeltaNet layer's geometry (linear attention with a delta-rule state: Yang et al.,
 * "Gated Delta Networks", ICLR 2025). Value head h reads key head floor(h / (numValueHeads /
 * numKeyHeads)), as transformers' repeat_interleave pairs them.
 */
export interface DeltaRuleParams {
  numKeyHeads: number;
  numValueHeads: number;
  keyDim: number;
  valueDim: number;
  /**
   * How finely the state decays: `head`, one decay per value head (Gated DeltaNet: Qwen3-Next,
   * Qwen3.5), or `keyChannel`, one per key channel of each head, decaying each row of its state
   * apiece (Kimi Delta Attention, KDA: Kimi Linear).
   */
  decay: 'head' | 'keyChannel';
}

/** The gate of a gated RMSNorm: silu (Qwen3-Next's, Mamba-2's) or sigmoid (Kimi Linear's). */
export type NormGate = 'silu' | 'sigmoid';

/**
 * One Mamba-2 layer's geometry (the selective state space recurrence, SSD: Dao & Gu, "Transformers
 * are SSMs", ICML 2024). Head h reads the B and C of group floor(h / (numHeads / numGroups)), as
 * transformers' repeat_interleave pairs them; dt is clamped to [dtMin, dtMax] after its softplus.
 */
export interface SelectiveScanParams {
  numHeads: number;
  headDim: number;
  numGroups: number;
  stateSize: number;
  dtMin: number;
  dtMax: number;
}

/** The activation between a gated MLP's up and down projections: act(gate) * up. */
export type Activation =
  | { kind: 'silu' }
  | { kind: 'gelu-tanh' }
  /** The exact (erf) GELU: transformers' "gelu". */
  | { kind: 'gelu' }
  | { kind: 'relu' }
  /** gpt-oss: gate clamped to ≤ limit, up to ±limit, (up + 1) · gate · σ(alpha · gate). */
  | { kind: 'clamped-swiglu'; alpha: number; limit: number };

/**
 * xIELU's constants (Apertus's MLP, one set per layer) as the activation uses them: alphaP =
 * softplus(α_p) and alphaN = beta + softplus(α_n) of the checkpoint's α_p, α_n; eps is negative.
 */
export interface XieluParams {
  alphaP: number;
  alphaN: number;
  beta: number;
  eps: number;
}

/** How a token picks its experts from the router's logits [numTokens, numExperts]. */
export interface RoutingParams {
  topK: number;
  /**
   * `softmax` over all experts, then the top k (Mixtral, Qwen, DeepSeek-V2); `sigmoid` per expert,
   * then the top k (DeepSeek-V3); `topk-softmax`: the top k logits, then a softmax over them (gpt-oss).
   */
  scoring: 'softmax' | 'sigmoid' | 'topk-softmax';
  /** [numExperts] added to the scores to choose experts but not to weight them (DeepSeek-V3); null for none. */
  selectionBias: Tensor | null;
  /**
   * Group-limited choice (DeepSeek): the experts form `numGroups` equal contiguous groups, and only
   * the `topkGroups` groups that score best (their best expert, or the sum of their two best) are candidates.
   */
  groups: { numGroups: number; topkGroups: number; score: 'max' | 'top2-sum' } | null;
  /** Divide the chosen weights by their sum (plus 1e-20, as DeepSeek-V3 does; no other router's sum is that small). */
  normalize: boolean;
  /** Multiplies the final weights (routed_scaling_factor; 1 for most routers). */
  scale: number;
  /**
   * The weight multiplies the expert's input, not its output: w · expert(x) becomes expert(w · x)
   * (Llama 4). Absent: false.
   */
  weightInputs?: boolean;
  /**
   * Router logits become cap · tanh(logit / cap) before they are scored (Laguna's
   * moe_router_logit_softcapping). Absent or null: as they are.
   */
  logitSoftcap?: number | null;
}

/**
 * A step's routing, from `routeExperts` for `expertMlp`: each token's topK experts (global ids, in
 * increasing order, so their outputs are summed in expert order as transformers does) and weights.
 */
export interface ExpertRouting {
  readonly numTokens: number;
  readonly topK: number;
  /** Experts the router chose among (global). */
  readonly numExperts: number;
}

/**
 * The experts this device holds: `count` of them starting at global expert `first` (experts are
 * the shard axis of expert parallelism), each a gated MLP with intermediate width n.
 */
export interface ExpertWeights {
  first: number;
  count: number;
  /**
   * [count, 2n, hidden]: each expert's gate rows, then its up rows. 16-bit (`loadWeight`), MXFP4
   * (`loadMxfp4Weight`) or int4/int8/fp8 (`loadQuantizedExperts`), as `down` is too: the kernels
   * read the packed values.
   */
  gateUp: Tensor;
  /** [count, hidden, n], in gateUp's format. */
  down: Tensor;
  /** [count, 2n] (gate, then up) and [count, hidden], or null. */
  gateUpBias: Tensor | null;
  downBias: Tensor | null;
}

/**
 * The shape of one linear layer's LoRA weights on the device: `slots` adapters of rank at most
 * `maxRank`. A linear stacking several projections (q/k/v, gate/up) has one slice per projection,
 * each with its own A [rank, inFeatures] and B [rows, rank]; its output is the slices' rows in order.
 */
export interface LoraShape {
  slots: number;
  maxRank: number;
  inFeatures: number;
  sliceRows: readonly number[];
}

/** LoRA weights of one linear layer for every adapter slot (createLoraWeights); a slot is zero until set. */
export interface LoraWeights {
  readonly shape: LoraShape;
}

/** One slice's LoRA matrices as float32 host values: a [rank, in], and b [rows, rank] with the adapter's scale folded in. */
export interface LoraSliceValues {
  a: Float32Array;
  b: Float32Array;
}

/** A mixture-of-experts block's weights, for `moe`. */
export interface MoeWeights {
  /** [numExperts, hidden]: the router, whose logits are float32 (linear's `float32`), plus routerBias [numExperts] if given. */
  router: Tensor;
  routerBias: Tensor | null;
  routing: RoutingParams;
  experts: ExpertWeights;
  /** The routed experts' activation. */
  activation: Activation;
  /**
   * Dense experts every token goes through (Qwen2-MoE, DeepSeek), as one gated MLP without biases:
   * gateUp [2m, hidden] (gate rows, then up rows), down [hidden, m]; with `gate` [1, hidden] its
   * output is scaled per token by σ(x · gateᵀ).
   */
  shared: { gateUp: Tensor; down: Tensor; gate: Tensor | null; activation: Activation } | null;
}

/** The ops that put a model's weights on a backend (a layer's WeightUploader). */
export type WeightUploaderOps = Pick<Backend, 'loadWeight' | 'loadQuantizedWeight' | 'loadSparseWeight' | 'loadMxfp4Weight' | 'loadQuantizedExperts' | 'uploadRopeTable'>;

/**
 * How many of the latest sampling passes stay readable (`Backend.sampleRows`): a step in flight
 * and the next, or the drafting passes of a step, chained on the device and read at once.
 */
export const READABLE_SAMPLING_PASSES = 8;

/** How many of the latest `Backend.markTime` marks stay readable: a few steps' worth, read a step or two late. */
export const TIME_MARKS_KEPT = 128;

/** What one sampling pass drew; reading waits for it. */
export interface SampledTokens {
  read(): DrawResults;
}

/**
 * EAGLE-2 draft trees grown on the device (`Backend.beginDraftTrees`): per tree `size` nodes, each
 * a target token id, its parent (-1: the root, the last sampled token; else an earlier node) and
 * its path's log-probability under the head.
 */
export interface DraftTrees {
  readonly numTrees: number;
  readonly size: number;
  /** Waits for the trees: [numTrees, size] each (nodes a tree has not grown yet are unspecified). */
  read(): DraftTreeNodes;
}

export interface DraftTreeNodes {
  /** Target ids; -1 where the head left no candidate. */
  tokens: Int32Array;
  parents: Int32Array;
  logprobs: Float32Array;
}

/** One depth of `Backend.expandDraftTrees`, per tree (every tree of the DraftTrees, in order). */
export interface DraftTreeDepth {
  /** The tree's nodes before this depth. */
  counts: Int32Array;
  /** Its frontier: its last `frontiers[t]` nodes (0: the root alone, at the first depth). */
  frontiers: Int32Array;
  /** How many children it keeps this depth (0: the tree does not grow). */
  keeps: Int32Array;
  /** The row of the latest sampling pass holding its first frontier node's candidates (the others' follow). */
  rows: Int32Array;
}

/**
 * A point in the order of a backend's work (`Backend.markTime`): on CUDA an event recorded on the
 * stream, reached when the device gets there; on the CPU, which works as it is called, the host
 * clock at the call. Opaque to callers.
 */
export interface TimeMark {
  readonly backend: 'cpu' | 'cuda';
}

/** A batch description uploaded for one forward step (device copies of its index arrays). */
export interface StepInputs {
  readonly batch: BatchDescription;
}

/**
 * The groups a backend's collective ops run over in a parallel run: its tensor-parallel group,
 * and its pipeline group (the devices of its tensor-parallel rank, one per stage: rank = stage).
 * Buffers are the backend's own (a Float32Array on the CPU, a device buffer on CUDA).
 */
export interface CollectiveGroups<B> {
  tensor: Communicator<B>;
  pipeline: Communicator<B>;
}

/** What bounds the KV pool's size, besides the memory left after the weights. */
export interface KvBudgetLimits {
  /** Fraction of GPU memory Keel may use in all. */
  gpuMemoryUtilization: number;
  /** Largest step, in tokens: its activations must fit beside the pool. */
  maxNumBatchedTokens: number;
  /** The pool's size on the CPU backend. */
  cpuKvCacheBytes: number;
}

/**
 * The ops every backend implements over the same batch description. The backend knows ops, not
 * model families: layers (src/layers) compose them. Tensors returned by step ops live until the
 * next `beginStep`; weights, rope tables and KV caches live until `dispose`.
 *
 * The packed `qkv` activation of an attention layer is [numTokens, (numHeads + 2 * numKvHeads) *
 * headDim]: all query heads, then key heads, then value heads, each head contiguous.
 */
export interface Backend {
  readonly name: 'cpu' | 'cuda';
  /** Bytes of one element in a KV pool of dtype `auto` (4 for float32, 2 for bf16); the 8-bit dtypes take 1 on every backend. */
  readonly kvElementBytes: number;
  /**
   * Bytes the KV pool may take, asked after the weights are loaded: the CPU backend returns
   * `cpuKvCacheBytes`; the CUDA backend, free memory within `gpuMemoryUtilization` minus what the
   * largest step's activations need.
   */
  kvCacheBudgetBytes(limits: KvBudgetLimits): number;

  /**
   * A weight in the backend's compute dtype, or in float32 on every backend with `float32` (what
   * transformers keeps in float32 whatever the model's dtype, such as DeepSeek-V3's routing bias).
   */
  loadWeight(t: HostTensor, options?: { float32?: boolean }): Tensor;
  /**
   * A linear weight [rows, cols] in one of Keel's quantized layouts (int4, int8, fp8 e4m3 codes
   * with group scales: src/tensor/quantized-weight.ts), kept in that form on the device; `linear`
   * and `gatedLinear` multiply by it as by the weight it dequantizes to. With `table`, a vocabulary
   * matrix (a GGUF file's token embedding or LM head): `embedding` also gathers its rows, so it
   * keeps Keel's row layout (int4 or int8, no act-order), and `linear` never dequantizes all of
   * it at once (on CUDA its large batches run the quantized GEMM in slices of rows, so a
   * vocabulary-sized bf16 copy is never allocated).
   */
  loadQuantizedWeight(w: QuantizedWeight, options?: { table?: boolean }): Tensor;
  /**
   * A 2:4 sparse linear weight [rows, cols] (src/tensor/sparse24.ts), kept in a form the backend's
   * sparse product reads; `linear` and `gatedLinear` multiply by it as by the dense weight it
   * expands to.
   */
  loadSparseWeight(w: Sparse24Weight): Tensor;
  /**
   * Routed MoE experts [count, rows, cols] in MXFP4 (src/tensor/mxfp4.ts), kept packed on the
   * device, for ExpertWeights' gateUp and down; multiplied as the values they dequantize to.
   */
  loadMxfp4Weight(w: Mxfp4Weight): Tensor;
  /**
   * Routed MoE experts [count, w.rows / count, w.cols]: `count` experts' matrices stacked along
   * w's rows, each expert's rows a run of equal length, in int4, int8 or fp8-e4m3 without act-order
   * (src/tensor/quantized-weight.ts), kept in that layout on the device, for ExpertWeights' gateUp
   * and down; multiplied as the values they dequantize to.
   */
  loadQuantizedExperts(w: QuantizedWeight, count: number): Tensor;
  uploadRopeTable(table: RopeTable): Tensor;
  createKvCache(layout: KvCacheLayout): KvCache;
  /** Copy whole KV blocks src[i] -> dst[i] in every layer (copy-on-write after a fork). */
  copyBlocks(cache: KvCache, src: Int32Array, dst: Int32Array): void;
  /** Copy sequence state slots src[i] -> dst[i] in every state layer (a fork's child takes its parent's state). */
  copyStateSlots(cache: KvCache, src: Int32Array, dst: Int32Array): void;
  /** Host memory for `layout.numBlocks` blocks of caches with `layout.layers`. */
  createSwapSpace(layout: KvCacheLayout): SwapSpace;
  createWeightStream(): WeightStream;
  /**
   * Loads weights as group `group` of the stream: their values stay in host memory, and the
   * tensors returned read device buffers shared with the other groups of the group's parity,
   * holding this group's values only between its `fetchWeights` and the next fetch of a group of
   * that parity. Groups are loaded in order from 0.
   */
  weightGroupUploader(stream: WeightStream, group: number): WeightUploaderOps;
  /**
   * Copies group `group`'s weights into its device buffers once the work queued so far (which may
   * read the buffers' previous group) is done; work queued afterwards runs beside the copies until
   * `awaitWeights`. The host does not wait. A group without weights copies nothing.
   */
  fetchWeights(stream: WeightStream, group: number): void;
  /** Work queued after this call reads group `group`'s weights: it runs after their latest fetch. */
  awaitWeights(stream: WeightStream, group: number): void;
  /**
   * Copies device blocks src[i] to host blocks dst[i] in every layer, after the work queued so far
   * (which may still be writing them); work queued afterwards (a step reusing the device blocks)
   * runs after the copies. The host does not wait.
   */
  swapOut(cache: KvCache, swap: SwapSpace, src: Int32Array, dst: Int32Array): void;
  /**
   * Copies host blocks src[i] to device blocks dst[i] in every layer; the host blocks keep their
   * content. The copies run beside the work queued after them (on CUDA, on a transfer stream), so
   * nothing may read the destination blocks until `awaitSwapIns`; swaps run in the order they
   * were queued.
   */
  swapIn(cache: KvCache, swap: SwapSpace, src: Int32Array, dst: Int32Array): void;
  /** Work queued after this call runs after every swapIn queued before it. The host does not wait. */
  awaitSwapIns(): void;
  /**
   * Copy single slots (block * blockSize + offset) src[i] -> dst[i] in every layer, the pairs in
   * order: pair i reads its source after pairs before it wrote theirs. Speculative tree
   * verification moves the K/V of the accepted path into place with it. Key summaries (sparse
   * attention) are per block: each destination block's are recomputed from its keys at offsets 0
   * .. its last destination (dst ascending within a block), as a step's writes recompute them.
   */
  copySlots(cache: KvCache, src: Int32Array, dst: Int32Array): void;

  /**
   * Writes row i of `rows` [slots.length, width] to slot slots[i] of rows layer `layer` (a
   * `RowsKvSpec` of that width): the hidden states a speculative head drafts from, kept per slot.
   */
  writeCacheRows(cache: KvCache, layer: number, rows: Tensor, slots: Int32Array): void;
  /**
   * `writeCacheRows` at the step's own slots: row t of `rows` [numTokens, width] to token t's slot
   * in the layer's KV group (`BatchDescription.slotMapping`), read on the device, so that a
   * replayed graph writes each step's rows where that step's tokens are.
   */
  writeStepCacheRows(cache: KvCache, layer: number, rows: Tensor, step: StepInputs): void;
  /**
   * Row s of `rows` [numSeqs, width] to the slot after sequence s's last token of the step (cache
   * index seqLens[s], through its block table in the layer's KV group, which must reach it), read
   * on the device: a speculative head's output, the feature its next drafting pass reads there.
   */
  writeNextCacheRows(cache: KvCache, layer: number, rows: Tensor, step: StepInputs): void;
  /** The rows of slots `slots` of rows layer `layer`: [slots.length, width]. */
  readCacheRows(cache: KvCache, layer: number, slots: Int32Array): Tensor;
  /** `readCacheRows` at the step's own slots, read on the device: [numTokens, width]. */
  readStepCacheRows(cache: KvCache, layer: number, step: StepInputs): Tensor;

  beginStep(batch: BatchDescription): StepInputs;
  /**
   * [numTokens, hidden] rows of `table` times `scale`, for the step's token ids; those named by
   * `tokenSources` are read from the latest `sampleRows` output. The table holds the rows of ids
   * `firstRow` on (a vocab-parallel shard); an id outside them gives a zero row. The table is
   * 16-bit (`loadWeight`) or quantized (`loadQuantizedWeight` with `table`: each row dequantized
   * as it is gathered, then scaled). `scale` is first rounded to the backend's activation dtype (bf16
   * on CUDA, float32 on the CPU), as transformers casts Gemma's normalizer to the dtype it runs in.
   */
  embedding(table: Tensor, step: StepInputs, scale: number, firstRow: number): Tensor;
  rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor;
  /** residual += x (in place); returns rmsNorm(residual). */
  addRmsNorm(x: Tensor, residual: Tensor, weight: Tensor, eps: number): Tensor;
  /**
   * LayerNorm over each group of `width` consecutive values of x's rows (width = cols: the whole
   * row; width = head dim: each head of a projection), (v − mean) / √(var + eps) · w (+ b), with
   * mean and variance over the group in float32 and one rounding; weight and bias [cols] (one
   * value per column: each group its own), bias null for a LayerNorm without one (Cohere's), x
   * [rows, cols] with cols a multiple of width.
   */
  layerNorm(x: Tensor, weight: Tensor, bias: Tensor | null, eps: number, width: number): Tensor;
  /**
   * x [rows, in] times weightᵀ, weight [out, in], plus bias [out] if given. The weight's format is
   * its own: from `loadWeight` (the compute dtype), `loadQuantizedWeight` (multiplied from its
   * codes, equal to multiplying by its dequantized values) or `loadSparseWeight` (equal to
   * multiplying by its dense expansion). With `float32` (16-bit weights only) the
   * result is float32 on every backend: the sums and the bias added unrounded, for what transformers
   * computes in float32 whatever the model's dtype (an MoE router's logits, whose top-k choice a
   * 16-bit rounding can flip). Of the ops, only routeExperts (and toHost) take such a tensor.
   */
  linear(x: Tensor, weight: Tensor, bias: Tensor | null, options?: { float32?: boolean }): Tensor;
  /**
   * A gated MLP's up projection and activation: act(x · gateᵀ) * (x · upᵀ), [rows, n], with gateUp
   * [2n, in] holding the gate rows then the up rows. Both products are rounded to the backend's
   * activation dtype before the activation, as two separate ops would.
   */
  gatedLinear(x: Tensor, gateUp: Tensor, activation: Activation): Tensor;
  /**
   * act(x[:, :n]) * x[:, n:] for x [rows, 2n] (gate columns, then up): the activation of
   * `gatedLinear` alone, for a gate/up product that LoRA adds to before the activation.
   */
  gatedActivation(x: Tensor, activation: Activation): Tensor;
  /** Zeroed LoRA weights for `shape.slots` adapters of one linear layer. */
  createLoraWeights(shape: LoraShape): LoraWeights;
  /**
   * Puts one adapter of rank `rank` (≤ maxRank) in `slot`: each slice's matrices, or null for a
   * slice the adapter leaves alone (zero). Queued behind the work already issued, so a step still
   * running on the slot's previous adapter is not disturbed.
   */
  setLoraSlot(weights: LoraWeights, slot: number, rank: number, slices: readonly (LoraSliceValues | null)[]): void;
  /**
   * In place, the batched LoRA op (SGMV/BGMV style): for every token t whose adapter slot
   * s = step.batch.loraSlots[t] is not -1, out[t] += (x[t] · A_sᵀ) · B_sᵀ, slice by slice (the
   * shrink to rank dims in float32, then the expand into the slice's output rows). Tokens of
   * different adapters, and of none, share the step. A no-op when the step has no loraSlots.
   */
  addLora(out: Tensor, x: Tensor, weights: LoraWeights, step: StepInputs): void;
  /** [rows, Σ cols]: each row the parts' rows side by side, in order (EAGLE's token embedding beside a hidden state). */
  concatColumns(parts: readonly Tensor[]): Tensor;
  /** In place: x = cap · tanh(x / cap) (Gemma 2's final logits). */
  softcap(x: Tensor, cap: number): void;
  /** In place: x = x · factor, computed in float32 and rounded once (Granite's residual multiplier and logits scaling). */
  scale(x: Tensor, factor: number): void;
  /** In place: x = x · σ(x) (Medusa heads' residual blocks). */
  silu(x: Tensor): void;
  /**
   * In place, xIELU (Apertus's ungated MLP): alphaP · x² + beta · x where x > 0, else
   * (expm1(min(x, eps)) − x) · alphaN + beta · x; in float32, rounded once.
   */
  xielu(x: Tensor, params: XieluParams): void;
  /**
   * Per head, x [rows, heads * width] times weight[h]ᵀ, weight [heads, out, in] with in ≤ width:
   * head h's leading `in` values of each row give [rows, heads * out] (MLA's absorbed projections).
   */
  headwiseLinear(x: Tensor, weight: Tensor): Tensor;
  /**
   * An attention output gate: x [rows, cols] times fn(gate), gate [rows, cols] (one value per element:
   * Qwen3-Next's and Qwen3.5's σ, Laguna's per-element softplus) or [rows, cols / k] (one value per k
   * consecutive columns, a gate per head: Laguna's per-head softplus). fn(gate) is rounded to the
   * activation dtype before the product.
   */
  multiplyGate(x: Tensor, gate: Tensor, fn: GateFunction): Tensor;
  /** In place: target += x, each row scaled by σ(gate[row]) when a gate [rows, 1] is given (Qwen2-MoE's shared expert). */
  addInto(target: Tensor, x: Tensor, gate: Tensor | null): void;
  /**
   * Sums x over the tensor-parallel group (the devices holding shards of a row-parallel layer),
   * in place, and returns it; the identity on one device (docs/parallelism.md).
   */
  allReduce(x: Tensor): Tensor;
  /**
   * x [rows, cols] of every device of the tensor-parallel group side by side, [rows, size · cols],
   * device r's at columns r · cols (the logits of a vocab-parallel LM head); x on one device.
   */
  allGatherColumns(x: Tensor): Tensor;
  /** Pipeline parallel: sends x to the device of the same tensor-parallel rank in pipeline stage `stage`. */
  sendToStage(x: Tensor, stage: number): void;
  /** Receives the tensor [shape] that stage `stage` sends with sendToStage. */
  receiveFromStage(shape: readonly number[], stage: number): Tensor;
  /** Pipeline parallel: sends a sparse-attention choice to stage `stage` (GLM-5's shared layers reuse one across a stage boundary). */
  sendSelectionToStage(selection: TokenSelection, stage: number): void;
  /** Receives the [numTokens, topK] choice that stage `stage` sends with sendSelectionToStage. */
  receiveSelectionFromStage(numTokens: number, topK: number, stage: number): TokenSelection;

  /**
   * In place: norm the heads with `norm` when given, rotate the leading rope.rotaryDim dimensions
   * of query and key heads by position, then write keys and values to the layer's slots. One op, so
   * that a backend can keep each head in registers from its norm to its cache slot.
   */
  ropeAndCacheWrite(qkv: Tensor, rope: Tensor, cache: KvCache, layer: number, step: StepInputs, attn: AttentionParams, norm?: HeadNorm | null): void;
  /** Causal attention of each token's query heads over its sequence's cached keys/values. [numTokens, numHeads * headDim] */
  attention(qkv: Tensor, cache: KvCache, layer: number, step: StepInputs, attn: AttentionParams): Tensor;

  /**
   * MLA's cache write: kv [numTokens, latentDim + ropeDim] (the latent, then the shared key's
   * rotary part) has its latent RMS-normalized by `latentNorm` and its rotary part rotated, in
   * place, and is written to the layer's slots; the rotary part of every head of q [numTokens,
   * numHeads * (nopeDim + ropeDim)] is rotated in place too, and then scaled by its position's
   * temperature where `mla.queryTemperature` sets one. `rope` covers ropeDim dimensions.
   */
  mlaRopeAndCacheWrite(q: Tensor, kv: Tensor, latentNorm: Tensor, eps: number, rope: Tensor, cache: KvCache, layer: number, step: StepInputs, mla: MlaParams): void;
  /**
   * Absorbed MLA: head h of token t scores cached row j (its sequence's positions up to t's, or
   * only those `selection` lists for t) as scale · (qLatent[t, h] · latent_j + qRope[t, h] ·
   * rope_j), where qRope is the trailing ropeDim of q's head h, and returns the softmax-weighted sum
   * of latents, [numTokens, numHeads * latentDim].
   */
  mlaAttention(qLatent: Tensor, q: Tensor, cache: KvCache, layer: number, step: StepInputs, mla: MlaParams, selection?: TokenSelection | null): Tensor;
  /**
   * MLA from the queries to the heads' values, [numTokens, numHeads * valueDim]: by definition
   * headwiseLinear(mlaAttention(headwiseLinear(q, up.keyAbsorption), q, …), up.valueAbsorption),
   * the absorbed form. A backend may run long chunks in the expanded form instead (each context
   * key projected to every head's key [W_UK c | k_rope] and value W_UV c, then ordinary attention):
   * the same sums in another order.
   */
  mlaAttentionHeads(q: Tensor, cache: KvCache, layer: number, step: StepInputs, mla: MlaParams, up: MlaUpProjections, selection?: TokenSelection | null): Tensor;
  /**
   * The lightning indexer's cache write: k [numTokens, headDim] is LayerNorm-ed (mean and variance
   * over headDim, eps, then × normWeight + normBias), its leading ropeDim rotated, in place, and
   * written to the layer's indexer-key pool at the tokens' slots (in the cache's dtype, as MLA's
   * rows: IndexKeysSpec); the leading ropeDim of every head
   * of q [numTokens, numHeads * headDim] is rotated in place too.
   */
  indexerRopeAndCacheWrite(q: Tensor, k: Tensor, normWeight: Tensor, normBias: Tensor, eps: number, rope: Tensor, cache: KvCache, layer: number, step: StepInputs, indexer: IndexerParams): void;
  /**
   * The lightning indexer's choice: token t (position p) scores each position j ≤ p of its
   * sequence as Σ_h weightScale · weights[t, h] · relu(scale · q[t, h] · key_j) (key_j as the
   * cache holds it, an 8-bit code times its scale), with weights
   * [numTokens, numHeads] float32, and keeps the topK best (ties to the earlier position), or all
   * p + 1 positions when there are no more than topK.
   */
  indexerTopK(q: Tensor, weights: Tensor, cache: KvCache, layer: number, step: StepInputs, indexer: IndexerParams): TokenSelection;
  /** Each token's experts and their weights from router logits [numTokens, numExperts], float32 or not. */
  routeExperts(logits: Tensor, params: RoutingParams): ExpertRouting;
  /**
   * Σ over each token's routed experts held here of weight · down(act(gate(x)) · up(x)) (each
   * projection plus its bias, if any), [numTokens, hidden]; experts held elsewhere contribute
   * nothing (allReduce sums the devices' parts). Tokens are grouped by expert, so each expert's
   * weights are read once per step, and only the chosen experts' are read.
   */
  expertMlp(x: Tensor, routing: ExpertRouting, experts: ExpertWeights, activation: Activation): Tensor;
  /**
   * A whole MoE block on x [numTokens, hidden]: what `composeMoe` (moe-composition.ts) computes
   * from the ops above (router logits in float32, routeExperts, expertMlp, the shared expert added
   * by addInto), which a backend may run fused (CUDA: one launch for a single token). Returns this
   * device's part, [numTokens, hidden], for allReduce.
   */
  moe(x: Tensor, weights: MoeWeights): Tensor;

  /**
   * The short causal convolution of a state layer (`SequenceStateSpec`), then silu: x [numTokens,
   * channels], weight [channels, kernel] (depthwise), plus bias [channels] (before the silu) if
   * given. Each sequence's tokens continue from the last kernel - 1 inputs kept in its state slot
   * (`step.batch.stateSlots`; zeros for a chunk starting at cache index 0), and the slot then keeps
   * its chunk's last kernel - 1 inputs (the slot's first `(kernel - 1) · channels` values,
   * [kernel - 1, channels]). Returns [numTokens, channels].
   */
  causalConv1d(x: Tensor, weight: Tensor, bias: Tensor | null, cache: KvCache, layer: number, step: StepInputs): Tensor;
  /**
   * The gated delta rule over each sequence's chunk, token by token, from the recurrent state in
   * its slot (zeros for a chunk starting at cache index 0; the slot's values after the conv
   * state: [numValueHeads, keyDim, valueDim], float32), which it leaves updated. qkv [numTokens,
   * 2 · numKeyHeads · keyDim + numValueHeads · valueDim] holds the queries, keys and values; ba
   * [numTokens, 2 · numValueHeads] the raw b then a projections. Per token and value head h, with
   * q and k its key head's, each L2-normalized (x · rsqrt(Σx² + 1e-6)) and q scaled by keyDim^-0.5:
   * β = σ(b_h), g = −exp(aLog_h) · softplus(a_h + dtBias_h) (aLog, dtBias [numValueHeads]),
   * S ← exp(g) · S; S ← S + k ⊗ β(v − Sᵀk); out = Sᵀq. Returns [numTokens, numValueHeads · valueDim].
   */
  gatedDeltaRule(qkv: Tensor, ba: Tensor, aLog: Tensor, dtBias: Tensor, cache: KvCache, layer: number, step: StepInputs, params: DeltaRuleParams): Tensor;
  /**
   * Mamba-2's selective scan over each sequence's chunk, token by token, from the state in its
   * slot (zeros for a chunk starting at cache index 0; the slot's values after the conv state:
   * [numHeads, headDim, stateSize], float32), which it leaves updated. xbc [numTokens, numHeads ·
   * headDim + 2 · numGroups · stateSize] holds x, then every group's B, then every group's C; dt
   * [numTokens, numHeads] the raw time steps; z [numTokens, numHeads · headDim] the output gate.
   * Per token and head h (aLog, dtBias, d [numHeads] float32): Δ = clamp(softplus(dt_h + dtBias_h),
   * dtMin, dtMax), S ← exp(−exp(aLog_h) · Δ) · S + Δ · x_h ⊗ B, y = S · C + d_h · x_h, out =
   * y · silu(z_h). Returns [numTokens, numHeads · headDim].
   */
  selectiveScan(xbc: Tensor, dt: Tensor, z: Tensor, aLog: Tensor, dtBias: Tensor, d: Tensor, cache: KvCache, layer: number, step: StepInputs, params: SelectiveScanParams): Tensor;
  /**
   * Gated RMSNorm per group of `weight.length` columns: x / rms(x) · weight · act(gate), act silu or
   * sigmoid (`activation`), x and gate [rows, groups · width] (Gated DeltaNet's and KDA's output
   * norm, one group per value head).
   */
  gatedRmsNorm(x: Tensor, gate: Tensor, weight: Tensor, eps: number, activation: NormGate): Tensor;

  /** Rows `step.batch.logitsIndices` of x. */
  gatherLogitsRows(x: Tensor, step: StepInputs): Tensor;
  /** Rows `rows` of x [n, cols] (any order, repeats allowed): [rows.length, cols]. */
  gatherRows(x: Tensor, rows: Int32Array): Tensor;
  /** Copy a [rows, cols] tensor to the host as float32. */
  toHost(x: Tensor): Float32Array;
  /**
   * The sampling pass: each draw's token from its row of logits x [rows, cols], with its logprob
   * and top alternatives' (src/sampling/draw.ts says how; draw-sampler.ts is the reference). A
   * draw's pending token is read from the previous pass's ids. Returns without waiting: the ids
   * stay where the next step's (or the next drafting pass's) `tokenSources` read them, and
   * `read()` waits for the results on the host (only they cross). The results of the
   * `READABLE_SAMPLING_PASSES` latest calls stay readable: speculative drafting chains that many
   * passes on the device and reads them together.
   */
  sampleRows(x: Tensor, draws: readonly Draw[]): SampledTokens;
  /**
   * Maps each id the latest `sampleRows` left on the device (where `tokenSources` and pending
   * draws read them) through `map`: id i becomes map[i] (-1 stays, an id past the map becomes -1).
   * The pass's results on the host keep the ids it drew. An EAGLE-3 head draws from its own
   * vocabulary; its next drafting pass embeds the target's id. The same array is uploaded once.
   */
  mapSampledIds(map: Int32Array): void;

  /** `numTrees` empty draft trees of `size` nodes on the device, for `expandDraftTrees`. */
  beginDraftTrees(numTrees: number, size: number): DraftTrees;
  /**
   * One depth of EAGLE-2's dynamic trees, on the device: each growing tree's frontier nodes'
   * candidates are the top ids and log-probabilities of their rows in the latest `sampleRows`
   * pass (each row's `topWidth` of them, ids mapped through `map`, the draft→target table of a
   * head of its own vocabulary, where given); their path log-probabilities are the parent's plus
   * their own, added in float32; the `keeps[t]` best, ranked exactly as the CPU's `expandDepth`
   * ranks them (ties to the earlier frontier node, then the better-ranked candidate), become the
   * tree's next nodes. The latest pass's ids then become the trees' tokens: id t · size + i is tree
   * t's node i, where the next pass's `tokenSources` read it.
   */
  expandDraftTrees(trees: DraftTrees, depth: DraftTreeDepth, map: Int32Array | null): void;
  /**
   * Rewrites the tree-mask rows of the step's draft-tree chunks from the trees' parents, on the
   * device: chunk s is tree chunkTrees[s]'s root followed by its first nodes, in order, and node
   * i's row (chunk token i + 1) becomes its ancestors', the root's and its own bits.
   */
  writeDraftTreeMask(trees: DraftTrees, step: StepInputs, chunkTrees: Int32Array): void;
  /**
   * The feature rows of the step's draft-tree chunks (as `writeDraftTreeMask`), picked on the
   * device: `slots` holds, per chunk, the slots of its cache indices root - 1, root, root + 1, ...
   * (one more than the chunk's tokens); the root reads the first, node i the one of its parent's
   * index (root + 1 + parent; the root's for a child of the root). [numTokens, width].
   */
  readDraftTreeCacheRows(cache: KvCache, layer: number, trees: DraftTrees, step: StepInputs, chunkTrees: Int32Array, slots: Int32Array): Tensor;

  /**
   * Marks the current point of the work queued so far, without waiting for it (the step timeline,
   * docs/benchmarks.md). A mark stays readable for the backend's next `TIME_MARKS_KEPT` marks. The
   * first call may allocate; a backend never marked allocates nothing for it.
   */
  markTime(): TimeMark;
  /**
   * Milliseconds of the backend's clock from mark `start` to the later mark `end`: the device's
   * time between reaching them. Waits until the device has reached `end`, which a caller avoids by
   * asking only once work queued after `end` was read back.
   */
  elapsedMs(start: TimeMark, end: TimeMark): number;

  /** Whether `replayForward` records steps as graphs (CUDA); if not, it just runs the forward. */
  readonly recordsGraphs: boolean;
  /**
   * Returns `forward()`'s result for this step: by replaying the graph `owner` (the model runner)
   * recorded for an earlier step of the same shape (tokens, sequences, block-table width, logits
   * rows), or by recording one now. Only for steps whose every kernel argument is fixed by that
   * shape: the model runner's padded decode steps. The result is the tensors (or an object of
   * tensors: the logits and the hidden rows a head reads) the recording returned, which a replay
   * writes again. Its step tensors stay until the next beginStep, as an eager forward's do, and
   * ops after it (a head reading its hidden rows) allocate past them.
   */
  replayForward<T>(step: StepInputs, owner: object, forward: () => T): T;

  dispose(): void;
}
