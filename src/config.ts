import type { BackendChoice } from './backend/select-backend.ts';
import type { KvCacheDtypeName } from './step/kv-cache-layout.ts';
import type { LoadTimeQuantization } from './tensor/quantize-rtn.ts';
import type { SparsityPattern } from './tensor/sparse24.ts';

/**
 * The one typed engine configuration, with every default in `DEFAULT_ENGINE_CONFIG`. CLI flags
 * map onto these fields one-to-one (`--max-num-seqs` -> maxNumSeqs).
 */
export interface EngineConfig {
  /**
   * A model directory in Hugging Face layout, or a Hugging Face repo id ORG/NAME[@REVISION] (found
   * in the Hugging Face cache, or downloaded into it). Defaults to the embedded model.
   */
  model: string;
  /** `auto` picks CUDA when a GPU and its libraries are found, else the CPU backend. */
  backend: BackendChoice;
  /** `dummy` fills the architecture from config.json with random weights (benchmarks). */
  loadFormat: 'auto' | 'dummy';
  /**
   * Quantize a 16-bit checkpoint's linear layers at load, round to nearest (docs/quantization.md):
   * `fp8` e4m3 and `int8` with a scale per output row, `int4` with a scale and zero per group of
   * 128 columns, `nf4` (bitsandbytes NF4) in blocks of 64, `llm-int8` int8 multiplied by
   * LLM.int8()'s outlier decomposition (threshold 6); fp8, int8 and int4 take routed MoE experts
   * too (docs/quantization.md); `mxfp4` quantizes the routed MoE experts instead (OCP MXFP4, as
   * gpt-oss ships them). `aqlm-2x8` / `aqlm-1x16` draw random AQLM linear layers, with
   * loadFormat `dummy` only (benchmarks; a real checkpoint's AQLM codes take `keel quantize
   * --method vq`). null keeps the checkpoint's format (a quantized checkpoint is read as it is).
   */
  quantization: LoadTimeQuantization | null;
  /**
   * Run the linear layers (attention and MLP projections) as 2:4 sparse (docs/sparsity.md): the
   * CPU backend multiplies their compressed values, CUDA runs them on cuSPARSELt. Every such
   * weight must hold at most 2 non-zeros in each group of 4 input columns. null: as the
   * checkpoint declares (`quantization_config.sparsity_config`), else dense.
   */
  sparsity: SparsityPattern | null;
  /**
   * How the KV cache stores keys and values (vLLM's names): `auto`, the backend's activation dtype;
   * `fp8` / `fp8_e4m3`, e4m3 codes with a per-layer scale for keys and one for values (the
   * checkpoint's k_scale / v_scale, else 1); `int8`, codes with a scale per token and kv head;
   * `int4`, two codes a byte with a scale and a minimum per token and kv head (attention layers
   * only, not MLA). The 8-bit dtypes fit twice the tokens of bf16 in the same memory, int4 about
   * four times (docs/quantization.md).
   */
  kvCacheDtype: KvCacheDtypeName;
  /** Tokens per KV-cache block. */
  blockSize: number;
  /** KV blocks in the pool; null sizes it from memory (gpuMemoryUtilization or cpuKvCacheBytes). */
  numKvBlocks: number | null;
  /** Fraction of GPU memory Keel may use for weights, activations and the KV pool. */
  gpuMemoryUtilization: number;
  /** KV pool size on the CPU backend when numKvBlocks is null. */
  cpuKvCacheBytes: number;
  /**
   * Longest sequence (prompt + output); null means the model's max_position_embeddings, or with
   * StreamingLLM `STREAMING_MAX_MODEL_LEN` (its rotary tables cover that many positions).
   */
  maxModelLen: number | null;
  /** Most sequences in one step. */
  maxNumSeqs: number;
  /** Token budget of one step: decodes plus prefill chunks. */
  maxNumBatchedTokens: number;
  enablePrefixCaching: boolean;
  /**
   * With prefix caching, for a model whose layers keep a state per sequence (Gated DeltaNet): the
   * device state slots that keep states at cached block boundaries, which a prefix hit needs
   * (docs/long-context.md, "Prefix caching of hybrid models"). Each costs one sequence's state
   * slot of memory, taken from the KV budget. 0: no prefix caching for such a model.
   */
  numStateCheckpoints: number;
  /** Run every step op by op; otherwise decode steps replay recorded CUDA graphs (CUDA backend). */
  enforceEager: boolean;
  /**
   * Schedule and launch step N+1 before reading step N's sampled tokens, so the GPU never waits
   * for the host; a step whose tokens the host must see first (forks, a known last token) still waits.
   */
  asyncScheduling: boolean;
  /** Seed for requests that bring none. */
  seed: number;
  /** Show a progress bar while loading weights (on a terminal) and report the KV pool on stderr. */
  showProgress: boolean;
  /** Speculative decoding (docs/speculative-decoding.md); null decodes one token per step. */
  speculative: SpeculativeConfig | null;
  /**
   * StreamingLLM (docs/long-context.md): every query attends to its sequence's first
   * `streamingSinks` tokens and latest `streamingWindow` tokens, with positions inside that cache,
   * so a sequence runs past the model's context; the blocks between are freed. Both or neither.
   */
  streamingSinks: number | null;
  streamingWindow: number | null;
  /**
   * Sparse decode attention (docs/long-context.md, "Sparse attention"): `quest` makes each decode
   * attend, per kv head, to `sparseTokenBudget` tokens' worth of whole KV blocks: the first
   * `sparseSinkTokens`' blocks, the last `sparseWindowTokens`' blocks, and the blocks whose keys
   * can score highest against the query (Quest's bound from per-block key summaries). Prefill and
   * the layers in `sparseDenseLayers` stay dense. null: dense attention everywhere.
   */
  sparseAttention: 'quest' | null;
  sparseTokenBudget: number | null;
  sparseSinkTokens: number;
  sparseWindowTokens: number;
  sparseDenseLayers: number[];
  /**
   * Serve PEFT LoRA adapters (docs/lora.md): requests name one by its name as their model. Implied
   * by `loraModules`; needed to load adapters at run time when none is given at start.
   */
  enableLora: boolean;
  /** Adapters served from the start, by name. */
  loraModules: LoraModule[];
  /** Adapters held on the device at once (slots); a step's sequences use at most this many. */
  maxLoras: number;
  /** Largest adapter rank accepted (device slots are sized for it), at most MAX_LORA_RANK. */
  maxLoraRank: number;
  /**
   * How a sequence preempted for lack of KV blocks gets its K/V back (docs/long-context.md):
   * `recompute` reruns its tokens; `swap` copies the K/V of a context longer than one step's token
   * budget to host memory and back (shorter ones are still recomputed, which costs less).
   */
  preemptionMode: 'recompute' | 'swap';
  /** GiB of host memory (pinned, on CUDA) for swapped-out blocks under preemptionMode `swap`; each rank of a parallel run has this much for its KV shard. */
  swapSpace: number;
  /**
   * GiB of host memory (pinned, on CUDA) for the prefix cache's host tier (docs/long-context.md):
   * blocks evicted from the device prefix cache are kept there and copied back on a later hit,
   * instead of being recomputed. 0: no host tier. Needs prefix caching. Each rank of a parallel
   * run has this much for its KV shard.
   */
  kvOffloadGb: number;
  /**
   * GiB of decoder-layer weights (counted at 16 bits a parameter; whole layers, evenly spaced) kept
   * in host memory (pinned, on CUDA) and streamed to the device before each use, double-buffered
   * (docs/long-context.md). 0: every weight on the device. Decode steps then run eagerly (no CUDA graphs).
   * Each rank of a parallel run streams this much of its own shard (a layer counts 1/N of its size at TP N).
   */
  cpuOffloadGb: number;
  /**
   * Devices each layer is split over (docs/parallelism.md): attention heads, MLP columns, the
   * vocabulary, MoE experts' intermediate size, with an all-reduce after each row-parallel layer.
   */
  tensorParallelSize: number;
  /** Stages the layers are split into, consecutive layers per stage, activations passed between them. */
  pipelineParallelSize: number;
  /**
   * Micro-batches in flight at once with several pipeline stages, 1 to pipelineParallelSize: each
   * a disjoint set of the running sequences, so that stage k works on one while stage k + 1 works
   * on the one before (docs/parallelism.md). null: as many as there are stages.
   */
  pipelineMicroBatches: number | null;
  /** MoE: place whole experts on the tensor-parallel devices instead of splitting every expert. */
  enableExpertParallel: boolean;
  /**
   * Engine replicas a server runs behind its one endpoint, each with the whole model (itself split
   * by tensorParallelSize × pipelineParallelSize) on devices of its own, and a router in the server
   * choosing one per request by prefix affinity and load (docs/parallelism.md). One LLM is one
   * engine: only `keel serve` (EngineReplicas) runs more than 1.
   */
  dataParallelSize: number;
  /**
   * Times in a row the server starts a data-parallel replica again after its process died
   * (docs/parallelism.md): after 1 s, doubling to 30 s between attempts; a replica that then
   * serves for 10 minutes starts a fresh run. 0: never, the replica stays down (vLLM restarts no
   * replica). Meanwhile the others serve its share.
   */
  maxReplicaRestarts: number;
}

/** A LoRA adapter to serve: the name requests give as their model, and its PEFT directory. */
export interface LoraModule {
  name: string;
  path: string;
}

/** The largest --data-parallel-size: the router keeps a bit per replica for each block it remembers (a server on one host has fewer GPUs; more replicas are more servers behind a router). */
export const MAX_DATA_PARALLEL_SIZE = 32;

/** The largest --max-lora-rank. */
export const MAX_LORA_RANK = 256;

/** The longest sequence under StreamingLLM when maxModelLen is not given. */
export const STREAMING_MAX_MODEL_LEN = 131072;

/**
 * How a decoding sequence proposes drafts, verified by the model in its next step. Flags:
 * --speculative-method, --speculative-model, --num-speculative-tokens, --ngram-min, --ngram-max,
 * --ngram-branches, --speculative-tree, --speculative-tree-width, --self-spec-layers,
 * --speculative-disable-by-batch-size.
 */
export interface SpeculativeConfig {
  /**
   * `ngram`: prompt lookup in the sequence's own tokens; `draft`: a smaller model sharing the
   * tokenizer; `medusa`: Medusa heads on the target's hidden states, drafting a static tree;
   * `eagle`, `eagle3`: an EAGLE-1/2 or EAGLE-3 head; `mtp`: the target's own multi-token
   * prediction layer (DeepSeek-V3, GLM-4.5 to GLM-5); `self`: the target's first layers (early exit).
   */
  method: SpeculativeMethod;
  /** The draft model's directory (method `draft`) or the heads' (methods `medusa`, `eagle`, `eagle3`). */
  model: string | null;
  /**
   * Medusa's static draft tree as its paths of candidate ranks ([0], [1], [0, 0], ...: Medusa's
   * "choices"), cut to numSpeculativeTokens deep; null: DEFAULT_MEDUSA_TREE.
   */
  tree: number[][] | null;
  /** Most drafts a sequence proposes per step (K). */
  numSpeculativeTokens: number;
  /** n-gram lookup matches the last n tokens, n from ngramMax down to ngramMin. */
  ngramMin: number;
  ngramMax: number;
  /**
   * n-gram lookup: the continuations of up to this many earlier occurrences, merged into a draft
   * tree verified in one pass (1: the latest occurrence's, a chain).
   */
  ngramBranches: number;
  /**
   * EAGLE and MTP heads: each depth keeps the `treeWidth` drafts of best path probability among
   * the `treeWidth` best children of the depth before (EAGLE-2's expansion), a tree of treeWidth ×
   * numSpeculativeTokens drafts verified in one pass; 1 drafts a chain.
   */
  treeWidth: number;
  /** Method `self`: the draft is the target's first this many layers, its final norm and LM head. */
  selfSpecLayers: number | null;
  /** A step with at least this many running sequences does not speculate (it is compute-bound already); null never turns it off. */
  disableByBatchSize: number | null;
  /**
   * For benchmarks only (`keel bench --synthetic-accepted-drafts`): every verification keeps this
   * many drafts (all, when fewer were proposed) whatever the target draws, along each draft's
   * first child, so a step's cost is timed at a chosen acceptance. The output is then not the
   * model's. null: drafts are kept as the target draws them.
   */
  syntheticAcceptedDrafts: number | null;
}

export const SPECULATIVE_METHODS = ['ngram', 'draft', 'medusa', 'eagle', 'eagle3', 'mtp', 'self'] as const;
export type SpeculativeMethod = (typeof SPECULATIVE_METHODS)[number];

/** What callers give: any engine field, and of the speculative config the method (or a draft model) and any other field. */
export type EngineOptions = Partial<Omit<EngineConfig, 'speculative'>> & { speculative?: Partial<SpeculativeConfig> | null };

export const DEFAULT_SPECULATIVE_CONFIG: Omit<SpeculativeConfig, 'method'> = {
  model: null,
  tree: null,
  numSpeculativeTokens: 4,
  ngramMin: 2,
  ngramMax: 4,
  ngramBranches: 1,
  treeWidth: 1,
  selfSpecLayers: null,
  disableByBatchSize: null,
  syntheticAcceptedDrafts: null,
};

export const DEFAULT_ENGINE_CONFIG: Omit<EngineConfig, 'model'> = {
  backend: 'auto',
  loadFormat: 'auto',
  quantization: null,
  sparsity: null,
  kvCacheDtype: 'auto',
  blockSize: 16,
  numKvBlocks: null,
  gpuMemoryUtilization: 0.9,
  cpuKvCacheBytes: 512 * 1024 * 1024,
  maxModelLen: null,
  maxNumSeqs: 256,
  maxNumBatchedTokens: 2048,
  enablePrefixCaching: true,
  numStateCheckpoints: 32,
  enforceEager: false,
  asyncScheduling: true,
  seed: 0,
  showProgress: true,
  speculative: null,
  streamingSinks: null,
  streamingWindow: null,
  sparseAttention: null,
  sparseTokenBudget: null,
  sparseSinkTokens: 4,
  sparseWindowTokens: 64,
  // Quest leaves the first two layers dense: their attention is not sparse enough to select from.
  sparseDenseLayers: [0, 1],
  enableLora: false,
  loraModules: [],
  maxLoras: 1,
  maxLoraRank: 16,
  preemptionMode: 'recompute',
  swapSpace: 4,
  kvOffloadGb: 0,
  cpuOffloadGb: 0,
  tensorParallelSize: 1,
  pipelineParallelSize: 1,
  pipelineMicroBatches: null,
  enableExpertParallel: false,
  dataParallelSize: 1,
  maxReplicaRestarts: 5,
};
