import type {
  Activation,
  AttentionParams,
  Backend,
  CollectiveGroups,
  DeltaRuleParams,
  DraftTreeDepth,
  DraftTreeNodes,
  DraftTrees,
  ExpertRouting,
  ExpertWeights,
  GateFunction,
  HeadNorm,
  IndexerParams,
  KvBudgetLimits,
  KvCache,
  LoraShape,
  LoraSliceValues,
  WeightUploaderOps,
  LoraWeights,
  MlaParams,
  MlaUpProjections,
  MoeWeights,
  NormGate,
  RopeTable,
  RoutingParams,
  SelectiveScanParams,
  SampledTokens,
  StepInputs,
  SwapSpace,
  Tensor,
  TimeMark,
  TokenSelection,
  WeightStream,
  XieluParams,
} from '../backend.ts';
import { floatToBf16Bits, floatToF16Bits, hostTensorToFloat32, roundToBf16 } from '../../tensor/host-dtype.ts';
import { checkQuantizedExperts, checkQuantizedTable, describeQuantized, numGroups, rowBytes, type QuantizedWeight } from '../../tensor/quantized-weight.ts';
import { expandSparse24, type Sparse24Weight } from '../../tensor/sparse24.ts';
import { SPARSE_ROWS_MULTIPLE, SPARSE_SHAPE_MULTIPLE } from './cusparselt.ts';
import { AQLM_GEMV_MAX_ROWS, AQLM_MAX_PARTS, aqlmGemvFits, launchAqlmDequantize, launchAqlmGemv } from './kernels/aqlm-linear.ts';
import { LLM_INT8_GEMMS, launchLlmInt8Linear, llmInt8ScratchBytes, type LlmInt8Gemm } from './kernels/llm-int8.ts';
import { launchIndexerKeyWrite, launchIndexerTopK } from './kernels/lightning-indexer.ts';
import { launchSparseMla, SPARSE_MLA_MAX_LATENT, SPARSE_MLA_MAX_ROPE } from './kernels/sparse-mla.ts';
import { checkMxfp4, type Mxfp4Weight } from '../../tensor/mxfp4.ts';
import { launchDequantize, launchEmbedQuantizedTokens, launchPermuteColumns, launchQuantizedGemv, quantizedGemvFits } from './kernels/quantized-linear.ts';
import { launchQuantizedGemm, QUANTIZED_GEMM_MAX_ROWS } from './kernels/quantized-gemm.ts';
import { launchMarlinGemm } from './kernels/marlin-gemm.ts';
import { launchMarlinDequantize, launchMarlinLayout } from './kernels/marlin-layout.ts';
import { FP8_GEMMS, QUANTIZED_GEMV_KERNELS, loadsInMarlinLayout, quantizedPath, takesW8a8, type Fp8Gemm, type QuantizedGemvKernel } from './kernels/quantized-path.ts';
import { launchW8a8Linear } from './kernels/w8a8-linear.ts';
import { BF16_GEMMS, GemmTuner, TUNED_GEMM_MAX_ROWS, type Bf16Gemm } from './gemm-tuner.ts';
import { launchGemvMma } from './kernels/gemv-mma.ts';
import type { HostTensor } from '../../tensor/host-tensor.ts';
import { assertDeltaRuleShapes, assertGroupWidth, assertSelectiveScanShapes, gateGroup, assertLoraOperands, assertLoraSlot, assertPackedQkvWidth, assertRoutingParams, assertSwapPairs, assertTokenSources, attentionKvLayer, checkDraftTreeChunks, checkCopyPairs, checkDraftTreeDepth, deltaRuleDecays, expertWidth, indexKeysKvLayer, mlaKvLayer, nextSlots, rowsKvLayer } from '../shape-checks.ts';
import { groupBlockTables, groupSlotMapping, type BatchDescription } from '../../step/batch.ts';
import { keySummaryElementsPerBlock, kvStorage, layerGroup, layoutIndex, sparseBlockCounts, type KvCacheLayout } from '../../step/kv-cache-layout.ts';
import { KeelError } from '../../errors.ts';
import { checkDraws, DRAFT_HISTORY_COLUMNS, draftHistoryRows, type Draw } from '../../sampling/draw.ts';
import { planAttention } from './attention-plan.ts';
import { type CudaGraph, CudaDevice } from './cuda-device.ts';
import { CudaKvCache, CudaLoraWeights, CudaMxfp4Tensor, CudaQuantizedExperts, CudaQuantizedTensor, CudaRopeTable, CudaSparse24Tensor, CudaStepInputs, CudaTensor, type DeviceDType, type StepDeviceArrays } from './cuda-tensor.ts';
import type { DevicePtr } from './driver-api.ts';
import { launchGatedActivation } from './kernels/activation.ts';
import { launchAddBias, launchMultiplyGate, launchScale, launchSilu, launchSoftcap, launchXielu } from './kernels/elementwise.ts';
import { launchAddInto } from './kernels/add-into.ts';
import { launchCausalConv1d, launchGatedDeltaRule, launchGatedRmsNorm, type StateSlotArgs } from './kernels/gated-delta-net.ts';
import { launchSelectiveScan } from './kernels/selective-scan.ts';
import { launchLora, LORA_MAX_SLICES, loraShrinkSplit } from './kernels/lora.ts';
import { planLoraTiles } from './lora-tiles.ts';
import { expertGemmTakes, expertGemvTakes, launchExpertMlp } from './kernels/moe-experts.ts';
import { launchMoeDecode, moeDecodeBlocks } from './kernels/moe-decode.ts';
import { composeMoe } from '../moe-composition.ts';
import { CudaExpertRouting, GEMV_MAX_TOKENS, launchRouteExperts, MAX_EXPERT_GROUPS, MAX_ROUTED_EXPERTS, MAX_TOP_K } from './kernels/moe-route.ts';
import { launchSampleRows, packDraws, unpackDrawResults } from './kernels/sample-rows.ts';
import { launchDraftTreeMask, launchDraftTreeSlots, launchExpandDraftTrees, type DraftTreeTable } from './kernels/draft-trees.ts';
import { launchReadBandwidth } from './kernels/bandwidth.ts';
import { launchBf16ToF32, launchToBf16 } from './kernels/convert.ts';
import { launchCopyBlocks, launchCopySlots } from './kernels/copy-blocks.ts';
import { DECODE_ATTENTION_KERNELS, launchDecodeAttention, type DecodeAttentionKernel } from './kernels/decode-attention.ts';
import { launchKeySummaries } from './kernels/key-summaries.ts';
import { launchSparseSelect } from './kernels/sparse-select.ts';
import { GEMV_MAX_ROWS, launchGemv } from './kernels/gemv.ts';
import { HEADWISE_GEMV_MAX_ROWS, HEADWISE_GEMV_ROWS_PER_WARP, launchHeadwiseGemv } from './kernels/headwise-gemv.ts';
import { launchMlaAttention } from './kernels/mla.ts';
import { MLA_DECODE_KERNELS, type MlaDecodeKernel } from './kernels/mla-decode.ts';
import {
  launchMlaExpandedPrefill,
  MLA_EXPANSION_MAX_BYTES,
  MLA_PREFILL_FORMS,
  mlaExpansionBytes,
  mlaExpansionUnsupported,
  type MlaExpandedPrefillArgs,
  type MlaPrefillForm,
} from './kernels/mla-expansion.ts';
import { launchMlaCacheWrite } from './kernels/mla-cache.ts';
import { launchLayerNorm } from './kernels/layer-norm.ts';
import { launchAddRmsNorm, launchRmsNorm } from './kernels/norm.ts';
import type { PagedAttentionArgs, PagedSequences } from './kernels/paged-attention-args.ts';
import { launchPrefillAttention, PREFILL_ATTENTION_PATHS, type PrefillAttentionPath } from './kernels/prefill-attention.ts';
import { launchRopeCacheWrite } from './kernels/rope-cache.ts';
import { launchColumnBlocks, launchCopyColumns, launchEmbedTokens, launchGatherRows, launchMapIds, launchScatterRows, launchScatterRowsAfter } from './kernels/rows.ts';
import { NcclCommunicator, type DeviceBuffer } from './nccl.ts';
import type { FailureBoard } from '../../parallel/failure-board.ts';
import { checkCudaKvLayout } from './kv-layout-limits.ts';
import { CudaSwapSpace, KvSwapper } from './kv-swap.ts';
import { CudaTimeMarks } from './time-marks.ts';
import { CudaWeightStream } from './weight-stream.ts';
import { StepArena } from './step-arena.ts';
import { packStepArrays } from './step-arrays.ts';
import { planMlaExpansion } from './mla-expansion-plan.ts';

export interface CudaBackendOptions {
  /** GPU ordinal (default 0). */
  device?: number;
  /** Initial size of the per-step arena; it grows to the largest step seen. */
  arenaBytes?: number;
  /** Fill every step tensor with NaN when allocated, so an element a kernel fails to write shows (tests). */
  poisonStepTensors?: boolean;
  /**
   * How `moe` runs a single token: `fused`, one launch for the whole block (moe-decode.cu), or
   * `split`, the ops of composeMoe (four to six launches). Default: $KEEL_MOE_DECODE, else fused
   * (5-9 % faster at batch 1 on the H200, equal to transformers on every MoE fixture there).
   */
  moeDecode?: MoeDecodePath;
  /**
   * Which prefill attention kernel runs (kernels/prefill-attention.ts): `legacy` (mma.sync), `auto`
   * (the Hopper wgmma kernel where it covers the layer) or `wgmma` (that kernel or an error).
   * Default: $KEEL_PREFILL_ATTENTION, else `auto` (on the H100, 2026-12-07: 1.31–1.64× the legacy kernel at 512–8k tokens).
   */
  prefillAttention?: PrefillAttentionPath;
  /**
   * Which kernel runs MLA decode: `flash` (mla-decode.cu: heads as the tensor-core rows, where the
   * shape and shared memory allow; elsewhere tiled runs) or `tiled` (mla.cu's kernel shared with
   * prefill). Default: $KEEL_MLA_DECODE, else flash (its GPU tests pass on the H100 and H200, and
   * it reads 1.7-1.9x as fast as tiled at 16 heads, faster at 128 too).
   */
  mlaDecode?: MlaDecodeKernel;
  /**
   * MLA's form for chunks of MLA_EXPANSION_MIN_CHUNK tokens or more (kernels/mla-expansion.ts;
   * decodes and shorter chunks run absorbed): `absorbed` (mla.cu, every token), `auto`
   * (expanded where the wgmma kernel takes the shapes and the scratch fits, absorbed elsewhere) or
   * `expanded` (that, or an error naming why not).
   * Default: $KEEL_MLA_PREFILL, else auto (its GPU tests and the expanded fixture's parity pass on
   * the H100; the expanded form took 0.12 / 1.09 ms against absorbed's 0.63 / 8.51 ms at 2k / 8k
   * tokens with 16 heads, DeepSeek-V2-Lite's 4k TTFT 85 ms against 136).
   */
  mlaPrefill?: MlaPrefillForm;
  /**
   * Which kernel runs decode attention where both can (kernels/decode-attention.ts):
   * `tensor-cores` (decode-attention-mma.cu), `cuda-cores` (decode-attention.cu) or `auto` (tensor
   * cores wherever their kernel takes the shape: measured faster at every shape timed). Default:
   * $KEEL_DECODE_ATTENTION, else auto.
   */
  decodeAttention?: DecodeAttentionKernel;
  /**
   * Load int4, int8 and fp8 linear weights in the fragment layout and multiply them with the
   * Marlin-style GEMM (kernels/marlin-gemm.cu) at every batch size up to MARLIN_MAX_ROWS.
   * Default: $KEEL_MARLIN=1, else off (until its GPU tests and benchmark are in).
   */
  marlin?: boolean;
  /**
   * Which kernel multiplies int4 and fp8 weights (row layout) at decode batch sizes: `cuda-cores`
   * (quantized_gemv_kernel), `tensor-cores` (gemv-mma.cu: the decoded pairs as mma.sync operands)
   * or `auto`, each format's and row count's faster one (kernels/quantized-path.ts). Default:
   * $KEEL_QUANTIZED_GEMV, else auto.
   */
  quantizedGemv?: QuantizedGemvKernel;
  /**
   * How fp8 weights multiply prefill-sized batches (kernels/quantized-path.ts): `w8a16` (the
   * weight dequantized for cuBLAS) or `w8a8` (activations quantized per token, cuBLASLt's FP8
   * GEMM). Default: $KEEL_FP8_GEMM, else w8a16.
   */
  fp8Gemm?: Fp8Gemm;
  /**
   * How bf16 linears of 9 to TUNED_GEMM_MAX_ROWS rows (decode batches) choose their GEMM:
   * `cublas` (cuBLAS's pick) or `tuned` (timed against cuBLASLt's heuristic candidates once per
   * shape, gemm-tuner.ts). Default: $KEEL_BF16_GEMM, else cublas.
   */
  bf16Gemm?: Bf16Gemm;
  /**
   * How LLM.int8() sums its int8 products past decode rows (kernels/llm-int8.ts): `dp4a` (a tiled
   * CUDA-core GEMM) or `tensor-cores` (cuBLAS's int8 GEMM, then the epilogue); exact either way.
   * Default: $KEEL_LLM_INT8_GEMM, else dp4a.
   */
  llmInt8Gemm?: LlmInt8Gemm;
  /**
   * Programmatic dependent launch (docs/cuda-backend.md, "Programmatic dependent launch"): on
   * compute capability 9.0 and later each kernel may be launched while the one before it finishes,
   * hiding the launch gap between the small dependent kernels of a batch-1 step. Default: on,
   * unless $KEEL_PDL=0.
   */
  pdl?: boolean;
  /**
   * A parallel run's groups (docs/parallelism.md): for each, the NCCL unique id rank 0 of the group
   * made, the group's size and this device's rank in it. The communicators run on the backend's
   * stream, so recorded graphs hold the collectives. With `failures`, the run's failure board: a
   * rank's failure recorded there makes every later collective throw it. Absent: one device.
   */
  parallel?: { tensor: NcclGroup; pipeline: NcclGroup; failures?: FailureBoard };
}

/** One NCCL group as a rank joins it. */
export interface NcclGroup {
  id: Uint8Array;
  size: number;
  rank: number;
}

export type MoeDecodePath = 'fused' | 'split';

/** KEEL_MARLIN: 1 loads quantized weights in the fragment layout, 0 or unset keeps Keel's row layout. */
function marlinFromEnv(): boolean {
  const value = process.env.KEEL_MARLIN;
  if (value === undefined || value === '' || value === '0') return false;
  if (value === '1') return true;
  throw new KeelError('invalid_argument', `KEEL_MARLIN must be '0' or '1', not '${value}'`);
}

/**
 * A kernel or path chosen by environment variable `name`, for comparing them without a code
 * change: one of `choices`, or `fallback` when unset or empty; any other value is refused by name.
 */
function choiceFromEnv<T extends string>(name: string, choices: readonly T[], fallback: T): T {
  const value = process.env[name];
  if (value === undefined || value === '') return fallback;
  const choice = choices.find((c) => c === value);
  if (choice === undefined) throw new KeelError('invalid_argument', `${name} must be one of ${choices.join(', ')}, not '${value}'`);
  return choice;
}

/** KEEL_PDL: 1 or unset launches kernels with programmatic dependent launch where the GPU has it, 0 does not. */
export function pdlFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  const value = env.KEEL_PDL;
  if (value === undefined || value === '' || value === '1') return true;
  if (value === '0') return false;
  throw new KeelError('invalid_argument', `KEEL_PDL must be '0' or '1', not '${value}'`);
}

/** KEEL_MOE_DECODE, for comparing the two single-token MoE paths without a code change. */
function moeDecodeFromEnv(): MoeDecodePath {
  const value = process.env.KEEL_MOE_DECODE;
  if (value === undefined || value === '' || value === 'fused') return 'fused';
  if (value === 'split') return 'split';
  throw new KeelError('invalid_argument', `KEEL_MOE_DECODE must be 'fused' or 'split', not '${value}'`);
}

const DEFAULT_ARENA_BYTES = 256 * 1024 * 1024;
/** Sampled-id rows kept for the next step's embedding before the buffer must grow. */
const INITIAL_SAMPLED_ROWS = 4096;

/**
 * The Backend on an NVIDIA GPU. Weights, activations and the KV cache are bf16 (MoE router logits
 * f32); every reduction (norms, GEMMs, softmax) accumulates in f32. Step tensors come from a bump arena reset by
 * `beginStep`, so a fixed op sequence reuses fixed addresses (CUDA-graph replay); all work is
 * queued on one stream and only `toHost` waits for it.
 */
export class CudaBackend implements Backend {
  readonly name = 'cuda' as const;
  readonly kvElementBytes = 2;
  readonly recordsGraphs = true;
  readonly device: CudaDevice;
  private readonly arena: StepArena;
  private readonly poison: boolean;
  private readonly owned: DevicePtr[] = [];
  private readback: { ptr: DevicePtr; bytes: number } | null = null;
  /** The latest sampleRows's draws, packed (kernels/sample-rows.ts), and its results before they are downloaded. */
  private drawsBuffer: { ptr: DevicePtr; bytes: number } | null = null;
  private drawResults: { ptr: DevicePtr; bytes: number } | null = null;
  /** The latest sampleRows's draws and top width: where expandDraftTrees finds its candidates in drawResults. */
  private lastPass: { rows: number; topWidth: number } | null = null;
  /** The draft trees of the latest beginDraftTrees (one set at a time), and how many sets came before. */
  private draftTreeBuffer: { ptr: DevicePtr; bytes: number } | null = null;
  private draftTreeSerial = 0;
  /**
   * The latest sampleRows's ids, where the next step's tokenSources and the next pass's pending
   * tokens are read. It outlives the step arena, and recorded graphs embed its address: growing
   * it drops them.
   */
  private sampled: { ptr: DevicePtr; capacity: number; rows: number };
  /**
   * The draft history (Draw.draftHistoryRow), DRAFT_HISTORY_COLUMNS ids a row: drafting passes'
   * tokens, read by the penalties of the passes after them. Only sampling passes touch it, never a
   * recorded graph: growing it keeps the graphs.
   */
  private draftHistory: { ptr: DevicePtr; rows: number } | null = null;
  /** Id maps of mapSampledIds on the device, uploaded once per map. */
  private readonly idMaps = new WeakMap<Int32Array, DevicePtr>();
  /** Recorded decode steps by shape, valid for one arena generation. */
  private readonly graphs = new Map<string, { graph: CudaGraph; out: unknown; arenaEnd: number }>();
  private graphsGeneration = 0;
  private readonly graphOwners = new Map<object, number>();
  /** The smallest KV pool and rope table created: what a replayed step is checked against. */
  private limits = { blocks: Infinity, slots: Infinity, rotaryRows: Infinity };
  /** Whether a cache this backend made holds MLA layers: only then do steps plan MLA's expansion. */
  private servesMla = false;
  private blockPairs: { ptr: DevicePtr; bytes: number } | null = null;
  /** Σ output rows of the 2-D weights loaded, and the largest: the basis of the activation estimate. */
  private weightRows = 0;
  private largestWeightRows = 0;
  /** Where quantized weights are dequantized for batches the quantized GEMV does not take. */
  private dequantized: { ptr: DevicePtr; bytes: number } | null = null;
  /**
   * Where quantized experts' down matrices are dequantized for shapes the expert kernels do not
   * take (their gate/up matrices go to `dequantized`: both are needed in one expertMlp). Both are
   * sized for the largest expert stack once some stack needs them (`expertsDequantize`).
   */
  private dequantizedDown: { ptr: DevicePtr; bytes: number } | null = null;
  private expertsDequantize = false;
  private largestExpertStackBytes = 0;
  /** Created with the first swap space; its pinned allocations are freed on dispose. */
  private swapper: KvSwapper | null = null;
  private readonly swapSpaces: CudaSwapSpace[] = [];
  private readonly weightStreams: CudaWeightStream[] = [];
  /** Backend.markTime's events, created as marks are made. */
  private readonly timeMarks: CudaTimeMarks;
  readonly moeDecode: MoeDecodePath;
  /** Read at each attention call: a benchmark may switch it between recordings. */
  prefillAttention: PrefillAttentionPath;
  /** Set between steps to switch MLA decode kernels (the attention bench times both); a recorded graph keeps its own. */
  mlaDecode: MlaDecodeKernel;
  /** Set between steps to switch MLA's prefill form (the attention bench times both). */
  mlaPrefill: MlaPrefillForm;
  /** MLA's expansion scratch (mla-expansion.ts), grown as steps need, up to MLA_EXPANSION_MAX_BYTES. */
  private mlaScratch: { ptr: DevicePtr; bytes: number } | null = null;
  /** While a graph records, when memory must not be reallocated (that synchronizes). */
  private recording = false;
  /** The key of the step graph replayForward is recording ('' otherwise): what the GEMM tuner notes untimed shapes under. */
  private recordingKey = '';
  /** Set between steps to switch decode attention kernels (the attention bench times both); a recorded graph keeps its own. */
  decodeAttention: DecodeAttentionKernel;
  /** Whether quantized weights that fit load in the fragment layout (CudaBackendOptions.marlin). */
  readonly marlin: boolean;
  /** Which kernel multiplies int4 and fp8 decode rows (CudaBackendOptions.quantizedGemv). */
  readonly quantizedGemv: QuantizedGemvKernel;
  /** How fp8 weights multiply prefill-sized batches (CudaBackendOptions.fp8Gemm). */
  readonly fp8Gemm: Fp8Gemm;
  /** How LLM.int8() sums its int8 products past decode rows (CudaBackendOptions.llmInt8Gemm). */
  readonly llmInt8Gemm: LlmInt8Gemm;
  /** Chooses decode-sized bf16 GEMMs by timing (CudaBackendOptions.bf16Gemm `tuned`); null: cuBLAS's pick. */
  private readonly gemmTuner: GemmTuner | null;
  /** NCCL communicators of a parallel run; null on one device. */
  private readonly groups: CollectiveGroups<DeviceBuffer> | null = null;

  constructor(options: CudaBackendOptions = {}) {
    this.device = new CudaDevice(options.device ?? 0, { programmaticLaunch: options.pdl ?? pdlFromEnv() });
    this.arena = new StepArena(this.device, options.arenaBytes ?? DEFAULT_ARENA_BYTES);
    this.timeMarks = new CudaTimeMarks(this.device.driver, this.device.stream);
    this.poison = options.poisonStepTensors ?? false;
    this.sampled = { ptr: this.ownedAlloc(INITIAL_SAMPLED_ROWS * 4), capacity: INITIAL_SAMPLED_ROWS, rows: 0 };
    this.moeDecode = options.moeDecode ?? moeDecodeFromEnv();
    this.prefillAttention = options.prefillAttention ?? choiceFromEnv('KEEL_PREFILL_ATTENTION', PREFILL_ATTENTION_PATHS, 'auto');
    this.mlaDecode = options.mlaDecode ?? choiceFromEnv('KEEL_MLA_DECODE', MLA_DECODE_KERNELS, 'flash');
    this.mlaPrefill = options.mlaPrefill ?? choiceFromEnv('KEEL_MLA_PREFILL', MLA_PREFILL_FORMS, 'auto');
    this.decodeAttention = options.decodeAttention ?? choiceFromEnv('KEEL_DECODE_ATTENTION', DECODE_ATTENTION_KERNELS, 'auto');
    this.marlin = options.marlin ?? marlinFromEnv();
    this.quantizedGemv = options.quantizedGemv ?? choiceFromEnv('KEEL_QUANTIZED_GEMV', QUANTIZED_GEMV_KERNELS, 'auto');
    this.fp8Gemm = options.fp8Gemm ?? choiceFromEnv('KEEL_FP8_GEMM', FP8_GEMMS, 'w8a16');
    this.llmInt8Gemm = options.llmInt8Gemm ?? choiceFromEnv('KEEL_LLM_INT8_GEMM', LLM_INT8_GEMMS, 'dp4a');
    this.gemmTuner = (options.bf16Gemm ?? choiceFromEnv('KEEL_BF16_GEMM', BF16_GEMMS, 'cublas')) === 'tuned' ? new GemmTuner(this.device) : null;
    if (options.parallel !== undefined) {
      const scratch = this.ownedAlloc(4);
      const failures = options.parallel.failures ?? null;
      const join = (g: NcclGroup) => new NcclCommunicator(g.id, g.size, g.rank, this.device.stream, scratch, () => this.device.synchronize(), failures);
      this.groups = { tensor: join(options.parallel.tensor), pipeline: join(options.parallel.pipeline) };
    }
  }

  /** The addresses of its NCCL communicators (none on one device), for whoever aborts them when a rank dies (abortNcclCommunicator). */
  get communicatorAddresses(): bigint[] {
    if (this.groups === null) return [];
    return [this.groups.tensor, this.groups.pipeline].map((comm) => (comm as NcclCommunicator).address);
  }

  /**
   * Device memory read bandwidth in bytes/s: the median of several timed passes of a kernel that
   * reads a 1 GiB buffer once, the pattern of a decode step streaming its weights (benchmarks divide
   * bytes read per step by it). A copy would count writes too, which decode hardly does.
   */
  measureMemoryBandwidth(): number {
    const bytes = 1 << 30;
    const src = this.device.alloc(bytes);
    const sink = this.device.alloc(16);
    try {
      this.device.fillBytes(src, 0, bytes);
      launchReadBandwidth(this.device, src, bytes, sink);
      const times = Array.from({ length: 9 }, () => this.device.timeMs(() => launchReadBandwidth(this.device, src, bytes, sink))).sort((a, b) => a - b);
      return bytes / (times[4] * 1e-3);
    } finally {
      this.device.free(src);
      this.device.free(sink);
    }
  }

  /**
   * Host-to-device copy bandwidth in bytes/s from pinned memory: the median of several timed
   * copies of 256 MiB, what weight offload's copies run at (benchmarks divide the offloaded bytes
   * a decode step copies by it).
   */
  measureHostToDeviceBandwidth(): number {
    const bytes = 256 << 20;
    const host = this.device.driver.allocHostAddress(bytes);
    const dst = this.device.alloc(bytes);
    try {
      const copy = () => this.device.driver.copyHtoDAsyncFromAddress(dst, host, bytes, this.device.stream);
      copy();
      const times = Array.from({ length: 5 }, () => this.device.timeMs(copy)).sort((a, b) => a - b);
      return bytes / (times[2] * 1e-3);
    } finally {
      this.device.free(dst);
      this.device.driver.freeHostAddress(host);
    }
  }

  /**
   * FLOP/s of a bf16 GEMM of 8192³ through cuBLAS, the rate prefill-heavy work is bound by: the
   * median of several timed runs on random-looking operands (constant ones run faster than real
   * data). Benchmarks divide a workload's model FLOPs by it.
   */
  measureMatmulFlops(): number {
    const n = 8192;
    const bytes = n * n * 2;
    const operands = this.device.alloc(3 * bytes);
    const [a, b, out] = [operands, operands + bytes, operands + 2 * bytes];
    try {
      // One MiB of random bf16 values (either sign, magnitudes 2^-7 to 2), tiled over both operands.
      const tile = 1 << 19;
      const values = new Uint16Array(tile);
      for (let i = 0; i < tile; i++) values[i] = ((Math.random() < 0.5 ? 0xbc00 : 0x3c00) + Math.floor(Math.random() * 0x400)) & 0xffff;
      this.device.uploadSync(a, values);
      for (let at = tile * 2; at < 2 * bytes; at += tile * 2) this.device.copyAsync(a + at, a, Math.min(tile * 2, 2 * bytes - at));
      this.device.cublas.linearBf16(out, a, b, n, n, n);
      const times = Array.from({ length: 5 }, () => this.device.timeMs(() => this.device.cublas.linearBf16(out, a, b, n, n, n))).sort((x, y) => x - y);
      return (2 * n ** 3) / (times[2] * 1e-3);
    } finally {
      this.device.synchronize();
      this.device.free(operands);
    }
  }

  /**
   * Free memory within `gpuMemoryUtilization`, less what the largest step's activations may take.
   * Step tensors are not reused within a step, so a token costs about two bf16 values per output
   * row of every weight matrix (each projection's output plus the norm/activation beside it); the
   * largest matrix (the vocabulary) only applies to the few logits rows and is left out.
   */
  kvCacheBudgetBytes(limits: KvBudgetLimits): number {
    const { free, total } = this.device.memInfo();
    const headroom = (1 - limits.gpuMemoryUtilization) * total;
    const perToken = 2 * 2 * (this.weightRows - this.largestWeightRows);
    const activations = Math.max(0, limits.maxNumBatchedTokens * perToken - this.arena.capacityBytes);
    return Math.max(0, Math.floor(free - headroom - activations));
  }

  loadWeight(t: HostTensor, options: { float32?: boolean } = {}): Tensor {
    return this.loadWeightInto(t, options, (bytes) => this.ownedAlloc(bytes));
  }

  /** `loadWeight` into the device memory `alloc` gives. */
  private loadWeightInto(t: HostTensor, options: { float32?: boolean }, alloc: (bytes: number) => DevicePtr): Tensor {
    const numel = t.shape.reduce((n, d) => n * d, 1);
    const elementBytes = t.dtype === 'f32' ? 4 : 2;
    if (t.data.byteLength !== numel * elementBytes) {
      throw new KeelError('invalid_model', `weight [${t.shape.join(', ')}] ${t.dtype} holds ${t.data.byteLength} bytes, expected ${numel * elementBytes}`);
    }
    if (options.float32) {
      const ptr = alloc(numel * 4);
      this.device.uploadSync(ptr, hostTensorToFloat32(t));
      return new CudaTensor([...t.shape], ptr, 'f32');
    }
    const ptr = alloc(numel * 2);
    if (t.dtype === 'bf16') {
      this.device.uploadSync(ptr, t.data);
    } else {
      const staging = this.device.alloc(t.data.byteLength);
      this.device.uploadSync(staging, t.data);
      launchToBf16(this.device, t.dtype, ptr, staging, numel);
      this.device.synchronize();
      this.device.free(staging);
    }
    if (t.shape.length === 2) {
      this.weightRows += t.shape[0];
      this.largestWeightRows = Math.max(this.largestWeightRows, t.shape[0]);
    }
    return new CudaTensor([...t.shape], ptr, 'bf16');
  }

  loadQuantizedWeight(w: QuantizedWeight, options: { table?: boolean } = {}): Tensor {
    return this.loadQuantizedWeightInto(w, (bytes) => this.ownedAlloc(bytes), false, options.table ?? false);
  }

  /**
   * `loadQuantizedWeight` into the device memory `alloc` gives. `experts`: a stack of MoE experts,
   * kept in the row layout whatever `marlin` says and not counted among the linear weights' rows
   * (as 16-bit expert stacks are not). `table`: a vocabulary matrix, kept in the row layout that
   * the embedding gather reads, and sizing no dequantize scratch where the quantized GEMM takes
   * its shape (quantizedLinear runs its large batches in slices of rows instead).
   */
  private loadQuantizedWeightInto(w: QuantizedWeight, alloc: (bytes: number) => DevicePtr, experts = false, table = false): CudaQuantizedTensor {
    if (table) checkQuantizedTable(w);
    if (w.mixedInt8 !== null) checkLlmInt8Weight(w);
    if (w.codebooks !== null && w.codebooks.partRows.length > AQLM_MAX_PARTS) {
      throw new Error(`an AQLM weight of ${w.codebooks.partRows.length} stacked parts, each with its own codebooks: the CUDA kernels take at most ${AQLM_MAX_PARTS}`);
    }
    const upload = (data: ArrayBufferView | null): DevicePtr => {
      if (data === null) return 0;
      const ptr = alloc(data.byteLength);
      this.device.uploadSync(ptr, data);
      return ptr;
    };
    const marlin = loadsInMarlinLayout(w, this.marlin && !experts && !table);
    const tensor = new CudaQuantizedTensor({
      shape: [w.rows, w.cols],
      format: w.format,
      groupSize: w.groupSize,
      groups: numGroups(w),
      rowBytes: rowBytes(w.format, w.cols),
      ...(marlin
        ? this.uploadMarlinLayout(w, alloc)
        : {
            // LLM.int8()'s dot products take signed codes: the stored code less 128, one XOR a byte.
            codes: upload(w.mixedInt8 === null ? w.codes : w.codes.map((c) => c ^ 0x80)),
            scales: upload(w.scales),
            zeros: upload(w.zeros),
          }),
      mins: upload(w.mins),
      perm: upload(w.perm),
      mixedInt8Threshold: w.mixedInt8?.threshold ?? null,
      // AQLM codebooks hold float16 values: kept so on the device, as the kernels read them.
      codebooks: upload(w.codebooks === null ? null : Uint16Array.from(w.codebooks.values, floatToF16Bits)),
      partEnds: w.codebooks === null ? [] : w.codebooks.partRows.map((_, i, rows) => rows.slice(0, i + 1).reduce((a, b) => a + b, 0)),
      layout: marlin ? 'marlin' : 'rows',
    });
    if (!experts) {
      this.weightRows += w.rows;
      this.largestWeightRows = Math.max(this.largestWeightRows, w.rows);
    }
    // Batches past the tensor-core GEMM's rows (and shapes the quantized kernels do not take)
    // multiply the weight dequantized into this one buffer, sized for the largest quantized
    // weight (allocated here, at load: never inside a recorded graph). A vocabulary table the GEMM
    // takes is left out: its bf16 copy would be the largest by far, for the few logits rows.
    if (!experts && !(table && quantizedGemvFits(tensor))) this.dequantized = this.atLeast(this.dequantized, 2 * w.rows * w.cols);
    return tensor;
  }

  loadSparseWeight(w: Sparse24Weight): Tensor {
    return this.loadSparseWeightInto(w, (bytes) => this.ownedAlloc(bytes));
  }

  loadQuantizedExperts(w: QuantizedWeight, count: number): Tensor {
    return this.loadQuantizedExpertsInto(w, count, (bytes) => this.ownedAlloc(bytes));
  }

  /**
   * `loadQuantizedExperts` into the device memory `alloc` gives: always in the row layout, where
   * expert e's rows are a run of the stack's (the expert kernels index them so). Shapes those
   * kernels do not take dequantize the stack (gate/up into `dequantized`, sized by
   * loadQuantizedWeightInto, down into `dequantizedDown`), allocated here, at load.
   */
  private loadQuantizedExpertsInto(w: QuantizedWeight, count: number, alloc: (bytes: number) => DevicePtr): Tensor {
    checkQuantizedExperts(w, count, 'loadQuantizedExperts');
    const stacked = this.loadQuantizedWeightInto(w, alloc, true);
    // A stack either kernel does not take makes its layer dequantize both stacks: every stack,
    // loaded before or after it, must fit the buffers.
    this.largestExpertStackBytes = Math.max(this.largestExpertStackBytes, 2 * w.rows * w.cols);
    if (!(expertGemvTakes(stacked) && expertGemmTakes(stacked))) this.expertsDequantize = true;
    if (this.expertsDequantize) {
      this.dequantized = this.atLeast(this.dequantized, this.largestExpertStackBytes);
      this.dequantizedDown = this.atLeast(this.dequantizedDown, this.largestExpertStackBytes);
    }
    return new CudaQuantizedExperts(stacked, count);
  }

  /**
   * `loadSparseWeight` into the device memory `alloc` gives: the bf16 expansion, and cuSPARSELt's
   * compressed copy when the shape is one it multiplies (both dimensions multiples of
   * SPARSE_SHAPE_MULTIPLE), compressed from the expansion on the device.
   */
  private loadSparseWeightInto(w: Sparse24Weight, alloc: (bytes: number) => DevicePtr): Tensor {
    const dense = asBf16(this.loadWeightInto(expandSparse24(w), {}, alloc), 'sparse weight');
    const fits = w.rows % SPARSE_SHAPE_MULTIPLE === 0 && w.cols % SPARSE_SHAPE_MULTIPLE === 0;
    return new CudaSparse24Tensor(dense, fits ? this.device.cusparseLt.compress(dense.ptr, w.rows, w.cols, this.device, alloc) : null);
  }

  /**
   * A weight's codes, scales and zeros in the fragment layout (kernels/marlin-layout.cu): uploaded
   * in Keel's layout to scratch memory and re-laid by the device, which takes a fraction of the
   * upload's time where the same permutation on the host would take longer than the upload.
   */
  private uploadMarlinLayout(w: QuantizedWeight, alloc: (bytes: number) => DevicePtr): { codes: DevicePtr; scales: DevicePtr; zeros: DevicePtr } {
    const scratch: DevicePtr[] = [];
    const staged = (data: Uint8Array | Float32Array | null): DevicePtr => {
      if (data === null) return 0;
      const ptr = this.device.alloc(data.byteLength);
      scratch.push(ptr);
      this.device.uploadSync(ptr, data);
      return ptr;
    };
    const from = { codes: staged(w.codes), scales: staged(w.scales), zeros: staged(w.zeros) };
    const to = { codes: alloc(w.codes.byteLength), scales: alloc(w.scales.byteLength), zeros: w.zeros === null ? 0 : alloc(w.zeros.byteLength) };
    launchMarlinLayout(this.device, to, from, w);
    this.device.synchronize();
    for (const ptr of scratch) this.device.free(ptr);
    return to;
  }

  loadMxfp4Weight(w: Mxfp4Weight): Tensor {
    return this.loadMxfp4WeightInto(w, (bytes) => this.ownedAlloc(bytes));
  }

  /** `loadMxfp4Weight` into the device memory `alloc` gives. */
  private loadMxfp4WeightInto(w: Mxfp4Weight, alloc: (bytes: number) => DevicePtr): Tensor {
    checkMxfp4(w, 'loadMxfp4Weight');
    const blocks = alloc(w.blocks.byteLength);
    this.device.uploadSync(blocks, w.blocks);
    const scales = alloc(w.scales.byteLength);
    this.device.uploadSync(scales, w.scales);
    return new CudaMxfp4Tensor({ shape: [...w.shape], blocks, scales });
  }

  uploadRopeTable(table: RopeTable): Tensor {
    const n = table.maxPositions * (table.rotaryDim / 2);
    if (table.cos.length !== n || table.sin.length !== n) {
      throw new Error(`uploadRopeTable: cos/sin need ${n} values for ${table.maxPositions} positions of rotary dim ${table.rotaryDim}`);
    }
    const cos = this.ownedAlloc(n * 4 * 2);
    const sin = cos + n * 4;
    this.device.uploadSync(cos, table.cos);
    this.device.uploadSync(sin, table.sin);
    this.limits.rotaryRows = Math.min(this.limits.rotaryRows, table.maxPositions);
    return new CudaRopeTable(table.maxPositions, table.rotaryDim, cos, sin);
  }

  createKvCache(layout: KvCacheLayout): KvCache {
    checkCudaKvLayout(layout);
    const bytes = new CudaKvCache(layout, 0).totalBytes;
    const base = this.ownedAlloc(bytes);
    // Zeroed so a stray read of an unwritten slot yields zeros, never NaN patterns.
    this.device.fillBytes(base, 0, bytes);
    this.limits.blocks = Math.min(this.limits.blocks, layout.numBlocks);
    this.limits.slots = Math.min(this.limits.slots, layout.numBlocks * layout.blockSize);
    this.servesMla ||= layout.layers.some((spec) => spec.kind === 'mla');
    return new CudaKvCache(layout, base);
  }

  copyBlocks(cache: KvCache, src: Int32Array, dst: Int32Array): void {
    const kv = asCudaKvCache(cache);
    const { numBlocks } = kv.layout;
    checkCopyPairs('copyBlocks', 'block', src, dst, numBlocks);
    this.launchPerPoolRun(kv, src, dst, (run) => {
      launchCopyBlocks(this.device, run.base, run.numPools, numBlocks * run.blockBytes, run.blockBytes, run.srcPtr, run.dstPtr, src.length);
    });
  }

  /**
   * Uploads the pairs src[i] -> dst[i] (sources, then destinations), then calls `launch` once per
   * run of adjacent pools of the same block size (every pool, for most models; with `slots`, the
   * per-slot pools). Returns where the destinations were uploaded (0 for no pairs).
   */
  private launchPerPoolRun(
    kv: CudaKvCache,
    src: Int32Array,
    dst: Int32Array,
    launch: (run: { base: DevicePtr; numPools: number; blockBytes: number; srcPtr: DevicePtr; dstPtr: DevicePtr }) => void,
    which: 'blocks' | 'slots' = 'blocks',
  ): DevicePtr {
    if (src.length === 0) return 0;
    const { srcPtr } = this.uploadPairs(src, dst);
    // Slot copies leave out the pools indexed by block alone (key summaries).
    const pools = which === 'blocks' ? kv.pools : kv.pools.filter((pool) => pool.perSlot);
    const adjacent = (a: number, b: number) => pools[b].offset === pools[a].offset + kv.layout.numBlocks * pools[a].blockBytes;
    for (let first = 0; first < pools.length; ) {
      let end = first + 1;
      while (end < pools.length && pools[end].blockBytes === pools[first].blockBytes && adjacent(end - 1, end)) end++;
      const { offset, blockBytes } = pools[first];
      launch({ base: kv.base + offset, numPools: end - first, blockBytes, srcPtr, dstPtr: srcPtr + src.length * 4 });
      first = end;
    }
    return srcPtr + src.length * 4;
  }

  /** Uploads copy pairs, sources then destinations, to a buffer that grows as needed. */
  private uploadPairs(src: Int32Array, dst: Int32Array): { srcPtr: DevicePtr; dstPtr: DevicePtr } {
    const pairs = new Int32Array(2 * src.length);
    pairs.set(src, 0);
    pairs.set(dst, src.length);
    const srcPtr = (this.blockPairs = this.atLeast(this.blockPairs, pairs.byteLength)).ptr;
    this.device.uploadAsync(srcPtr, pairs);
    return { srcPtr, dstPtr: srcPtr + src.length * 4 };
  }

  copyStateSlots(cache: KvCache, src: Int32Array, dst: Int32Array): void {
    const kv = asCudaKvCache(cache);
    const numSlots = kv.layout.stateSlots ?? 0;
    checkCopyPairs('copyStateSlots', 'state slot', src, dst, numSlots);
    if (src.length === 0) return;
    const { srcPtr, dstPtr } = this.uploadPairs(src, dst);
    // One launch per state layer, as verified on the H200 (2026-12-05); n-gram speculation copies
    // every step (a snapshot, and a rewind after a rejection), where one launch over the layers'
    // back-to-back slot arrays would do.
    kv.layout.layers.forEach((spec, index) => {
      if (spec.kind !== 'state') return;
      const { ptr, slotStride } = kv.stateSlots((kv.layout.firstLayer ?? 0) + index, 'copyStateSlots');
      launchCopySlots(this.device, ptr, 1, numSlots * slotStride * 4, slotStride * 4, srcPtr, dstPtr, src.length);
    });
  }

  /** Pinned host memory (cuMemHostAlloc), allocated now: swapping must not wait for an allocation. */
  createSwapSpace(layout: KvCacheLayout): SwapSpace {
    this.swapper ??= new KvSwapper(this.device);
    const bytes = new CudaKvCache(layout, 0).totalBytes;
    const space = new CudaSwapSpace(layout, this.device.driver.allocHostAddress(bytes));
    this.swapSpaces.push(space);
    return space;
  }

  /** The stream's pinned memory is allocated as groups are loaded, and freed on dispose. */
  createWeightStream(): WeightStream {
    const stream = new CudaWeightStream(this.device, (bytes) => this.ownedAlloc(bytes));
    this.weightStreams.push(stream);
    return stream;
  }

  weightGroupUploader(stream: WeightStream, group: number): WeightUploaderOps {
    const weights = asCudaWeightStream(stream);
    const alloc = (bytes: number) => weights.buffer(group, bytes);
    const kept = (tensor: Tensor): Tensor => {
      weights.keep(group);
      return tensor;
    };
    return {
      loadWeight: (t, options = {}) => kept(this.loadWeightInto(t, options, alloc)),
      loadQuantizedWeight: (w, options) => kept(this.loadQuantizedWeightInto(w, alloc, false, options?.table ?? false)),
      // A streamed layer's 2:4 weights stream as their dense expansion (half of what the
      // compressed copy would add to each transfer is metadata cuSPARSELt lays out its own way).
      loadSparseWeight: (w) => kept(this.loadWeightInto(expandSparse24(w), {}, alloc)),
      loadMxfp4Weight: (w) => kept(this.loadMxfp4WeightInto(w, alloc)),
      loadQuantizedExperts: (w, count) => kept(this.loadQuantizedExpertsInto(w, count, alloc)),
      // Rotary tables are shared by every layer: they stay on the device.
      uploadRopeTable: (table) => this.uploadRopeTable(table),
    };
  }

  fetchWeights(stream: WeightStream, group: number): void {
    asCudaWeightStream(stream).fetch(group);
  }

  awaitWeights(stream: WeightStream, group: number): void {
    asCudaWeightStream(stream).await(group);
  }

  swapOut(cache: KvCache, swap: SwapSpace, src: Int32Array, dst: Int32Array): void {
    const kv = asCudaKvCache(cache);
    const host = asCudaSwapSpace(swap);
    assertSwapPairs(kv.layout, host.layout, src, dst, 'device');
    this.swapper!.swapOut(kv, host, src, dst);
  }

  swapIn(cache: KvCache, swap: SwapSpace, src: Int32Array, dst: Int32Array): void {
    const kv = asCudaKvCache(cache);
    const host = asCudaSwapSpace(swap);
    assertSwapPairs(kv.layout, host.layout, src, dst, 'host');
    this.swapper!.swapIn(kv, host, src, dst);
  }

  awaitSwapIns(): void {
    this.swapper?.awaitSwapIns();
  }

  copySlots(cache: KvCache, src: Int32Array, dst: Int32Array): void {
    const kv = asCudaKvCache(cache);
    const { numBlocks, blockSize } = kv.layout;
    checkCopyPairs('copySlots', 'slot', src, dst, numBlocks * blockSize);
    const dstPtr = this.launchPerPoolRun(kv, src, dst, (run) => {
      const slotBytes = run.blockBytes / blockSize;
      if (slotBytes % 4 !== 0) throw new Error(`copySlots: a slot of ${slotBytes} bytes is not a whole number of 4-byte words`);
      launchCopySlots(this.device, run.base, run.numPools, numBlocks * run.blockBytes, slotBytes, run.srcPtr, run.dstPtr, src.length);
    }, 'slots');
    // Key summaries are per block: the destinations' blocks are recomputed from the moved keys, once per pool that keeps them.
    const { pools, poolOf } = kvStorage(kv.layout.layers, kv.layout.groups);
    pools.forEach((spec, p) => {
      if (keySummaryElementsPerBlock(spec) === 0 || spec.kind !== 'attention' || dst.length === 0) return;
      const layer = (kv.layout.firstLayer ?? 0) + poolOf.indexOf(p);
      launchKeySummaries(this.device, {
        summaries: kv.keySummaries(layer),
        kPool: kv.keys(layer),
        dtype: kv.dtype,
        kScales: kv.keyScales(layer),
        slotMapping: dstPtr,
        numTokens: dst.length,
        blockSize,
        numKvHeads: spec.numKvHeads,
        headDim: spec.headDim,
      });
    });
  }

  writeCacheRows(cache: KvCache, layer: number, rows: Tensor, slots: Int32Array): void {
    const kv = asCudaKvCache(cache);
    const { width } = rowsKvLayer(kv.layout, layer, slots, 'writeCacheRows');
    const t = asBf16(rows, 'writeCacheRows rows');
    if (t.rows !== slots.length || t.cols !== width) throw new Error(`writeCacheRows: rows [${t.shape.join(', ')}] for ${slots.length} slots of width ${width}`);
    launchScatterRows(this.device, kv.rows(layer), t.ptr, this.uploadIndices(slots), slots.length, width);
  }

  writeStepCacheRows(cache: KvCache, layer: number, rows: Tensor, step: StepInputs): void {
    const kv = asCudaKvCache(cache);
    const s = asCudaStep(step);
    const slots = groupSlotMapping(s.batch, layerGroup(kv.layout, layer));
    const { width } = rowsKvLayer(kv.layout, layer, slots, 'writeStepCacheRows');
    const t = asBf16(rows, 'writeStepCacheRows rows');
    if (t.rows !== slots.length || t.cols !== width) throw new Error(`writeStepCacheRows: rows [${t.shape.join(', ')}] for ${slots.length} tokens of width ${width}`);
    launchScatterRows(this.device, kv.rows(layer), t.ptr, groupSlots(s, layerGroup(kv.layout, layer)), slots.length, width);
  }

  writeNextCacheRows(cache: KvCache, layer: number, rows: Tensor, step: StepInputs): void {
    const kv = asCudaKvCache(cache);
    const s = asCudaStep(step);
    const group = layerGroup(kv.layout, layer);
    // Checked on the host (the block tables reach each slot); the kernel finds the slots on the device.
    const slots = nextSlots(s.batch, group, kv.layout.blockSize, 'writeNextCacheRows');
    const { width } = rowsKvLayer(kv.layout, layer, slots, 'writeNextCacheRows');
    const t = asBf16(rows, 'writeNextCacheRows rows');
    if (t.rows !== s.batch.numSeqs || t.cols !== width) throw new Error(`writeNextCacheRows: rows [${t.shape.join(', ')}] for ${s.batch.numSeqs} sequences of width ${width}`);
    launchScatterRowsAfter(this.device, kv.rows(layer), t.ptr, { tables: groupTables(s, group), seqLens: s.device.seqLens, maxBlocks: s.batch.maxBlocksPerSeq, blockSize: kv.layout.blockSize }, s.batch.numSeqs, width);
  }

  readStepCacheRows(cache: KvCache, layer: number, step: StepInputs): Tensor {
    const kv = asCudaKvCache(cache);
    const s = asCudaStep(step);
    const group = layerGroup(kv.layout, layer);
    const { width } = rowsKvLayer(kv.layout, layer, groupSlotMapping(s.batch, group), 'readStepCacheRows');
    const out = this.stepTensor([s.batch.numTokens, width]);
    launchGatherRows(this.device, out.ptr, kv.rows(layer), groupSlots(s, group), s.batch.numTokens, width);
    return out;
  }

  readCacheRows(cache: KvCache, layer: number, slots: Int32Array): Tensor {
    const kv = asCudaKvCache(cache);
    const { width } = rowsKvLayer(kv.layout, layer, slots, 'readCacheRows');
    const out = this.stepTensor([slots.length, width]);
    launchGatherRows(this.device, out.ptr, kv.rows(layer), this.uploadIndices(slots), slots.length, width);
    return out;
  }

  beginStep(batch: BatchDescription): StepInputs {
    this.arena.reset();
    const plan = planAttention(batch);
    // Uploaded with the step, so a recorded graph replays it.
    const mlaExpansion = this.servesMla && this.mlaPrefill !== 'absorbed' ? planMlaExpansion(batch, plan) : null;
    const { data, offsets } = packStepArrays(batch, plan, batch.loraSlots === null ? null : planLoraTiles(batch.loraSlots), mlaExpansion);
    const base = this.arena.alloc(data.byteLength);
    this.device.uploadAsync(base, data);
    const at = (name: keyof StepDeviceArrays) => base + offsets[name] * 4;
    return new CudaStepInputs(
      batch,
      {
        tokenIds: at('tokenIds'),
        tokenSources: at('tokenSources'),
        positions: at('positions'),
        rotaryRows: at('rotaryRows'),
        slotMapping: at('slotMapping'),
        queryStartLoc: at('queryStartLoc'),
        seqLens: at('seqLens'),
        blockTables: at('blockTables'),
        logitsIndices: at('logitsIndices'),
        decodeSeqs: at('decodeSeqs'),
        decodeTokens: at('decodeTokens'),
        prefillTiles: at('prefillTiles'),
        wideTiles: at('wideTiles'),
        sparseDecodeSeqs: at('sparseDecodeSeqs'),
        sparseDecodeTokens: at('sparseDecodeTokens'),
        sparsePrefillTiles: at('sparsePrefillTiles'),
        sparseWideTiles: at('sparseWideTiles'),
        loraOrder: at('loraOrder'),
        loraTiles: at('loraTiles'),
        treeMask: at('treeMask'),
        stateSlots: at('stateSlots'),
        mlaScratchBlocks: at('mlaScratchBlocks'),
        mlaScratchTables: at('mlaScratchTables'),
        mlaWideTiles: at('mlaWideTiles'),
        mlaAbsorbedTiles: at('mlaAbsorbedTiles'),
      },
      plan,
      mlaExpansion,
    );
  }

  embedding(table: Tensor, step: StepInputs, unroundedScale: number, firstRow: number): Tensor {
    const s = asCudaStep(step);
    // Activations are bf16 here: the scale is too (Backend.embedding).
    const scale = roundToBf16(unroundedScale);
    checkTokens(s.batch, this.sampled.rows);
    if (table instanceof CudaQuantizedTensor) {
      // Loaded as a table (loadQuantizedWeight's `table`): int4 or int8 in the row layout, no act-order.
      if (table.layout !== 'rows' || table.perm !== 0) throw new Error(`embedding: a quantized table [${table.shape.join(', ')}] not loaded as one (loadQuantizedWeight with table)`);
      const out = this.stepTensor([s.batch.numTokens, table.cols]);
      const { tokenIds: tokens, tokenSources: sources } = s.device;
      launchEmbedQuantizedTokens(this.device, { out: out.ptr, firstRow, tokens, sources, sampled: this.sampled.ptr, numRows: s.batch.numTokens, scale }, table);
      return out;
    }
    const t = asBf16(table, 'embedding table');
    requireMultipleOf8(t.cols, 'row width');
    const out = this.stepTensor([s.batch.numTokens, t.cols]);
    launchEmbedTokens(this.device, {
      out: out.ptr,
      table: t.ptr,
      firstRow,
      vocab: t.rows,
      cols: t.cols,
      tokens: s.device.tokenIds,
      sources: s.device.tokenSources,
      sampled: this.sampled.ptr,
      numRows: s.batch.numTokens,
      scale,
    });
    return out;
  }

  rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
    const input = asBf16(x, 'rmsNorm input');
    const w = normWeight(weight, input.cols, 'rmsNorm');
    const out = this.stepTensor(input.shape);
    launchRmsNorm(this.device, out.ptr, input.ptr, w.ptr, input.rows, input.cols, eps);
    return out;
  }

  addRmsNorm(x: Tensor, residual: Tensor, weight: Tensor, eps: number): Tensor {
    const input = asBf16(x, 'addRmsNorm input');
    const res = asBf16(residual, 'addRmsNorm residual');
    if (input.numel !== res.numel || input.cols !== res.cols) {
      throw new Error(`addRmsNorm: input [${input.shape.join(', ')}] does not match residual [${res.shape.join(', ')}]`);
    }
    const w = normWeight(weight, res.cols, 'addRmsNorm');
    const out = this.stepTensor(res.shape);
    launchAddRmsNorm(this.device, out.ptr, res.ptr, input.ptr, w.ptr, res.rows, res.cols, eps);
    return out;
  }

  layerNorm(x: Tensor, weight: Tensor, bias: Tensor | null, eps: number, width: number): Tensor {
    const input = asBf16(x, 'layerNorm input');
    assertGroupWidth(input.cols, width);
    requireMultipleOf8(width, 'layerNorm group width');
    const w = normWeight(weight, input.cols, 'layerNorm');
    const b = bias === null ? null : normWeight(bias, input.cols, 'layerNorm bias');
    const out = this.stepTensor(input.shape);
    launchLayerNorm(this.device, out.ptr, input.ptr, w.ptr, b?.ptr ?? 0, input.rows, input.cols, width, eps);
    return out;
  }

  linear(x: Tensor, weight: Tensor, bias: Tensor | null, options: { float32?: boolean } = {}): Tensor {
    if (weight instanceof CudaSparse24Tensor) return this.sparseLinear(x, weight, bias, options);
    if (weight instanceof CudaQuantizedTensor) {
      if (options.float32) throw new Error('linear: a float32 output is for 16-bit weights (routers stay 16-bit), not a quantized one');
      return this.quantizedLinear(x, weight, bias);
    }
    const input = asBf16(x, 'linear input');
    const w = asBf16(weight, 'linear weight');
    const [outDim, inDim] = w.shape;
    if (w.shape.length !== 2 || input.cols !== inDim) {
      throw new Error(`linear: input [${input.shape.join(', ')}] does not fit weight [${w.shape.join(', ')}]`);
    }
    const float32 = options.float32 ?? false;
    const out = this.stepTensor([input.rows, outDim], float32 ? 'f32' : 'bf16');
    if (input.rows === 0) return out;
    const b = bias === null ? null : asBf16(bias, 'linear bias');
    if (b !== null && b.numel !== outDim) throw new Error(`linear: bias of ${b.numel} values for ${outDim} outputs`);
    // Decode batches are memory-bound: a GEMV streams the weights faster than cuBLAS does at a few rows.
    if (input.rows <= GEMV_MAX_ROWS && inDim % 8 === 0) {
      launchGemv(this.device, out.ptr, input.ptr, w.ptr, b?.ptr ?? 0, input.rows, outDim, inDim, { float32 });
      return out;
    }
    if (this.gemmTuner !== null && !float32 && input.rows <= TUNED_GEMM_MAX_ROWS) {
      const choice = this.gemmTuner.choice(input.rows, outDim, inDim, w.ptr, this.recording ? this.recordingKey : null);
      this.gemmTuner.run(choice, out.ptr, input.ptr, w.ptr, input.rows, outDim, inDim);
    } else {
      this.device.cublas.linearBf16(out.ptr, input.ptr, w.ptr, input.rows, outDim, inDim, out.dtype);
    }
    if (b !== null) launchAddBias(this.device, out.ptr, b.ptr, input.rows, outDim, { float32 });
    return out;
  }

  /**
   * A 2:4 weight's product, chosen per shape. Decode-sized batches (up to GEMV_MAX_ROWS rows)
   * stream the dense expansion through the GEMV: they are memory-bound, and cuSPARSELt's gain is
   * tensor-core throughput on tiles of 16+ rows that such a batch would mostly pad
   * (`keel bench linear --format 2:4` times both to move this line). Larger batches run on
   * cuSPARSELt, their rows padded to a multiple of SPARSE_ROWS_MULTIPLE in a step-arena copy;
   * shapes cuSPARSELt does not take (no compressed copy) multiply the expansion.
   */
  private sparseLinear(x: Tensor, w: CudaSparse24Tensor, bias: Tensor | null, options: { float32?: boolean }): Tensor {
    const input = asBf16(x, 'linear input');
    if (w.compressed === null || input.rows <= GEMV_MAX_ROWS || options.float32) return this.linear(input, w.dense, bias, options);
    const [n, k] = w.shape;
    if (input.cols !== k) throw new Error(`linear: input [${input.shape.join(', ')}] does not fit weight [${w.shape.join(', ')}]`);
    const b = bias === null ? null : asBf16(bias, 'linear bias');
    if (b !== null && b.numel !== n) throw new Error(`linear: bias of ${b.numel} values for ${n} outputs`);
    const rows = Math.ceil(input.rows / SPARSE_ROWS_MULTIPLE) * SPARSE_ROWS_MULTIPLE;
    let xs = input.ptr;
    if (rows !== input.rows) {
      // The pad rows' products land in output rows no one reads: they need no zeroing.
      xs = this.arena.alloc(2 * rows * k);
      this.device.copyAsync(xs, input.ptr, 2 * input.rows * k);
    }
    const out = this.stepTensor([rows, n]);
    const { workspaceBytes } = this.device.cusparseLt.plan(w.compressed, rows);
    const workspace = workspaceBytes > 0 ? this.arena.alloc(workspaceBytes) : 0;
    this.device.cusparseLt.linear(out.ptr, xs, w.compressed, rows, workspace);
    if (b !== null) launchAddBias(this.device, out.ptr, b.ptr, input.rows, n, { float32: false });
    return new CudaTensor([input.rows, n], out.ptr, 'bf16');
  }

  /**
   * Decode-sized batches stream the codes through the quantized GEMV, batches up to
   * QUANTIZED_GEMM_MAX_ROWS through the tensor-core GEMM that decodes the weight tile by tile (an
   * act-order weight's activations gathered into its stored column order first for both); larger
   * ones, and shapes neither takes, dequantize the weight to bf16 and take the 16-bit path, or, for
   * fp8 weights under `fp8Gemm` w8a8, quantize the activations and run cuBLASLt's FP8 GEMM.
   */
  private quantizedLinear(x: Tensor, w: CudaQuantizedTensor, bias: Tensor | null): Tensor {
    const input = asBf16(x, 'linear input');
    if (input.cols !== w.cols) throw new Error(`linear: input [${input.shape.join(', ')}] does not fit weight [${w.shape.join(', ')}]`);
    const b = bias === null ? null : asBf16(bias, 'linear bias');
    if (b !== null && b.numel !== w.rows) throw new Error(`linear: bias of ${b.numel} values for ${w.rows} outputs`);
    if (w.mixedInt8Threshold !== null) return this.llmInt8Linear(input, w, b);
    if (w.codebooks !== 0) return this.aqlmLinear(input, w, b);
    if (takesW8a8(w, input.rows, this.fp8Gemm) && this.device.cublasLt.fp8RowScaledFits(input.rows, w.rows, w.cols)) {
      const out = this.stepTensor([input.rows, w.rows]);
      launchW8a8Linear(this.device, out.ptr, input.ptr, w, b?.ptr ?? 0, input.rows, { codes: this.arena.alloc(input.rows * w.cols), scales: this.arena.alloc(4 * input.rows) });
      return out;
    }
    const path = quantizedPath(w, input.rows, this.quantizedGemv);
    // Only a vocabulary table the GEMM takes is larger than the scratch (loadQuantizedWeightInto).
    const fitsScratch = (this.dequantized?.bytes ?? 0) >= 2 * w.rows * w.cols;
    if (!fitsScratch && (path === 'dequantize' || input.rows === 0)) return this.slicedQuantizedGemm(input, w, b);
    if (input.rows >= 1 && path !== 'dequantize') {
      const out = this.stepTensor([input.rows, w.rows]);
      let xs = input.ptr;
      if (w.perm !== 0) {
        xs = this.stepTensor(input.shape).ptr;
        launchPermuteColumns(this.device, xs, input.ptr, w.perm, input.rows, input.cols);
      }
      const launch = { gemv: launchQuantizedGemv, 'gemv-mma': launchGemvMma, gemm: launchQuantizedGemm, marlin: launchMarlinGemm }[path];
      launch(this.device, out.ptr, xs, w, b?.ptr ?? 0, input.rows, (bytes) => this.arena.alloc(bytes));
      return out;
    }
    const scratch = this.dequantized!;
    if (w.layout === 'marlin') launchMarlinDequantize(this.device, scratch.ptr, w);
    else launchDequantize(this.device, scratch.ptr, w);
    return this.linear(input, new CudaTensor([w.rows, w.cols], scratch.ptr, 'bf16'), bias);
  }

  /**
   * A weight larger than the dequantize scratch (a vocabulary table, loadQuantizedWeightInto):
   * the tensor-core GEMM over slices of at most QUANTIZED_GEMM_MAX_ROWS batch rows, each reading
   * the whole weight again, rather than a bf16 copy of it. Only batches past the GEMM's rows get
   * here: an LM head's many logits rows (large batches, prompt logprobs).
   */
  private slicedQuantizedGemm(input: CudaTensor, w: CudaQuantizedTensor, bias: CudaTensor | null): Tensor {
    const out = this.stepTensor([input.rows, w.rows]);
    for (let first = 0; first < input.rows; first += QUANTIZED_GEMM_MAX_ROWS) {
      const rows = Math.min(QUANTIZED_GEMM_MAX_ROWS, input.rows - first);
      launchQuantizedGemm(this.device, out.ptr + 2 * first * w.rows, input.ptr + 2 * first * input.cols, w, bias?.ptr ?? 0, rows, (bytes) => this.arena.alloc(bytes));
    }
    return out;
  }

  /** AQLM: the codebook-lookup GEMV for decode batches; larger ones dequantize to bf16 and take the 16-bit path. */
  private aqlmLinear(input: CudaTensor, w: CudaQuantizedTensor, bias: CudaTensor | null): Tensor {
    if (input.rows >= 1 && input.rows <= AQLM_GEMV_MAX_ROWS && aqlmGemvFits(w)) {
      const out = this.stepTensor([input.rows, w.rows]);
      launchAqlmGemv(this.device, out.ptr, input.ptr, w, bias?.ptr ?? 0, input.rows);
      return out;
    }
    const scratch = this.dequantized!;
    launchAqlmDequantize(this.device, scratch.ptr, w);
    return this.linear(input, new CudaTensor([w.rows, w.cols], scratch.ptr, 'bf16'), bias);
  }

  /** LLM.int8()'s mixed decomposition (kernels/llm-int8.cu), its scratch from the step arena. */
  private llmInt8Linear(input: CudaTensor, w: CudaQuantizedTensor, bias: CudaTensor | null): Tensor {
    const out = this.stepTensor([input.rows, w.rows]);
    if (input.rows === 0) return out;
    const bytes = llmInt8ScratchBytes(input.rows, w.cols, w.rows, this.llmInt8Gemm);
    const scratch = {
      absmax: this.arena.alloc(bytes.absmax),
      outlier: this.arena.alloc(bytes.outlier),
      list: this.arena.alloc(bytes.list),
      count: this.arena.alloc(bytes.count),
      xq: this.arena.alloc(bytes.xq),
      sums: bytes.sums > 0 ? this.arena.alloc(bytes.sums) : 0,
    };
    launchLlmInt8Linear(this.device, out.ptr, input.ptr, w, bias?.ptr ?? 0, input.rows, scratch, this.llmInt8Gemm);
    return out;
  }

  ropeAndCacheWrite(qkv: Tensor, rope: Tensor, cache: KvCache, layer: number, step: StepInputs, attn: AttentionParams, norm: HeadNorm | null = null): void {
    const packed = asPackedQkv(qkv, attn);
    const table = asRopeTable(rope);
    if (table.rotaryDim > attn.headDim) throw new Error(`ropeAndCacheWrite: rotary dim ${table.rotaryDim} exceeds head dim ${attn.headDim}`);
    const kv = layerCache(cache, layer, attn);
    const s = asCudaStep(step);
    const { numTokens } = s.batch;
    if (packed.rows !== numTokens) throw new Error(`ropeAndCacheWrite: qkv has ${packed.rows} rows for ${numTokens} tokens`);
    checkRopeAndSlots(s.batch, table, kv, 'ropeAndCacheWrite');
    launchRopeCacheWrite(this.device, {
      qkv: packed.ptr,
      cos: table.cos,
      sin: table.sin,
      rotaryRows: s.device.rotaryRows,
      slotMapping: groupSlots(s, layerGroup(kv.layout, layer)),
      kPool: kv.keys(layer),
      vPool: kv.values(layer),
      dtype: kv.dtype,
      kScales: kv.keyScales(layer),
      vScales: kv.valueScales(layer),
      kvScales: attn.kvScales ?? { k: 1, v: 1 },
      numTokens,
      numHeads: attn.numHeads,
      numKvHeads: attn.numKvHeads,
      headDim: attn.headDim,
      rotaryDim: table.rotaryDim,
      keysOnly: attn.streaming !== null,
      norm: norm === null ? null : headNormWeights(norm, attn.headDim),
    });
    // The layer's own spec: a pool shared with a sparse layer of another KV group keeps summaries this layer does not write.
    if (keySummaryElementsPerBlock(kv.layout.layers[layoutIndex(kv.layout, layer)]) > 0) {
      launchKeySummaries(this.device, {
        summaries: kv.keySummaries(layer),
        kPool: kv.keys(layer),
        dtype: kv.dtype,
        kScales: kv.keyScales(layer),
        slotMapping: groupSlots(s, layerGroup(kv.layout, layer)),
        numTokens,
        blockSize: kv.layout.blockSize,
        numKvHeads: attn.numKvHeads,
        headDim: attn.headDim,
      });
    }
  }

  attention(qkv: Tensor, cache: KvCache, layer: number, step: StepInputs, attn: AttentionParams): Tensor {
    if ((attn.attentionChunk ?? null) !== null && (attn.streaming !== null || (attn.sparse ?? null) !== null)) {
      throw new Error('attention: chunked attention does not combine with StreamingLLM or sparse attention');
    }
    const packed = asPackedQkv(qkv, attn);
    const sinks = attn.sinks === null ? null : asBf16(attn.sinks, 'attention sinks');
    if (sinks !== null && sinks.numel !== attn.numHeads) throw new Error(`attention: ${sinks.numel} sinks for ${attn.numHeads} heads`);
    const kv = layerCache(cache, layer, attn);
    const s = asCudaStep(step);
    if (s.batch.treeMask !== null && attn.streaming !== null) throw new Error('attention: StreamingLLM takes no tree mask');
    if (s.checkedCache !== cache) {
      checkBlockTables(s.batch, kv.layout.numBlocks, kv.layout.blockSize);
      s.checkedCache = cache;
    }
    const out = this.stepTensor([packed.rows, attn.numHeads * attn.headDim]);
    const common: PagedAttentionArgs = {
      out: out.ptr,
      qkv: packed.ptr,
      kPool: kv.keys(layer),
      vPool: kv.values(layer),
      dtype: kv.dtype,
      kScales: kv.keyScales(layer),
      vScales: kv.valueScales(layer),
      ...pagedSequences(s, kv, layer),
      shape: attn,
      sinks: sinks?.ptr ?? 0,
      rotary: attn.streaming === null ? null : this.streamingRotary(attn.streaming.rope, s),
    };
    // A sparse layer runs a verification chunk's tokens as decodes (AttentionPlan.sparse), and so
    // does a dense one where the step verifies short chains (AttentionPlan.chainsAsDecodes; not a
    // StreamingLLM layer, whose sink pass is left on the path its tests cover).
    const isSparse = (attn.sparse ?? null) !== null;
    const asDecodes = isSparse || (s.plan.chainsAsDecodes && attn.streaming === null);
    const split = asDecodes ? s.plan.sparse : s.plan;
    const arrays = asDecodes
      ? { decodeSeqs: s.device.sparseDecodeSeqs, decodeTokens: s.device.sparseDecodeTokens, prefillTiles: s.device.sparsePrefillTiles, wideTiles: s.device.sparseWideTiles }
      : s.device;
    const numDecode = split.decodeSeqs.length;
    const sparse =
      !isSparse || numDecode === 0
        ? undefined
        : launchSparseSelect(this.device, {
            qkv: packed.ptr,
            summaries: kv.keySummaries(layer),
            decodeSeqs: arrays.decodeSeqs,
            decodeTokens: arrays.decodeTokens,
            numDecode,
            ...pagedSequences(s, kv, layer),
            numHeads: attn.numHeads,
            numKvHeads: attn.numKvHeads,
            headDim: attn.headDim,
            blocks: sparseBlockCounts(attn.sparse!, kv.layout.blockSize),
            // A tree token's window runs to its cache index, up to a chunk's length past its position.
            treeBlocks: s.batch.treeMask === null ? 0 : Math.ceil((s.batch.maxQueryLen - 1) / kv.layout.blockSize),
            alloc: (bytes) => this.arena.alloc(bytes),
          });
    launchDecodeAttention(this.device, {
      ...common,
      decodeSeqs: arrays.decodeSeqs,
      decodeTokens: arrays.decodeTokens,
      numDecode,
      // Split by what the block tables can hold, not the exact longest context: that keeps a
      // decode step's launches fixed while its sequences grow, so a recorded graph stays valid.
      maxDecodeSeqLen: s.batch.maxBlocksPerSeq * kv.layout.blockSize,
      workspace: (bytes) => this.arena.alloc(bytes),
      sparse,
      treeMask: s.batch.treeMask === null ? null : { mask: s.device.treeMask, words: s.batch.treeMaskWords },
      kernel: this.decodeAttention,
    });
    launchPrefillAttention(this.device, {
      ...common,
      tiles: arrays.prefillTiles,
      numTiles: split.prefillTiles.length / 2,
      wideTiles: arrays.wideTiles,
      numWideTiles: split.wideTiles.length / 2,
      treeMask: s.device.treeMask,
      treeMaskWords: s.batch.treeMaskWords,
      path: this.prefillAttention,
    });
    return out;
  }

  /** StreamingLLM's query rotation inputs: the layer's table and the step's rows (checked by ropeAndCacheWrite). */
  private streamingRotary(rope: Tensor, step: CudaStepInputs): PagedAttentionArgs['rotary'] {
    const table = asRopeTable(rope);
    return { cos: table.cos, sin: table.sin, rotaryRows: step.device.rotaryRows, rotaryDim: table.rotaryDim };
  }

  gatedLinear(x: Tensor, gateUp: Tensor, activation: Activation): Tensor {
    if (gateUp instanceof CudaSparse24Tensor) {
      // Decode-sized batches take the dense expansion's fused GEMV (sparseLinear says why).
      if (gateUp.compressed === null || asBf16(x, 'gatedLinear input').rows <= GEMV_MAX_ROWS) return this.gatedLinear(x, gateUp.dense, activation);
      const n = gateUp.shape[0] / 2;
      requireMultipleOf8(n, 'gatedLinear width');
      const product = asBf16(this.sparseLinear(x, gateUp, null, {}), 'gatedLinear product');
      const out = this.stepTensor([product.rows, n]);
      launchGatedActivation(this.device, out.ptr, product.ptr, product.rows, n, activation);
      return out;
    }
    if (gateUp instanceof CudaQuantizedTensor) {
      const n = gateUp.rows / 2;
      requireMultipleOf8(n, 'gatedLinear width');
      const product = asBf16(this.quantizedLinear(x, gateUp, null), 'gatedLinear product');
      const out = this.stepTensor([product.rows, n]);
      launchGatedActivation(this.device, out.ptr, product.ptr, product.rows, n, activation);
      return out;
    }
    const input = asBf16(x, 'gatedLinear input');
    const w = asBf16(gateUp, 'gatedLinear weight');
    const [rows2n, inDim] = w.shape;
    if (w.shape.length !== 2 || rows2n % 2 !== 0 || input.cols !== inDim) {
      throw new Error(`gatedLinear: input [${input.shape.join(', ')}] does not fit gate/up weight [${w.shape.join(', ')}]`);
    }
    const n = rows2n / 2;
    if (input.rows >= 1 && input.rows <= GEMV_MAX_ROWS && inDim % 8 === 0) {
      const out = this.stepTensor([input.rows, n]);
      launchGemv(this.device, out.ptr, input.ptr, w.ptr, 0, input.rows, n, inDim, { gated: activation });
      return out;
    }
    requireMultipleOf8(n, 'gatedLinear width');
    const product = asBf16(this.linear(x, gateUp, null), 'gatedLinear product');
    const out = this.stepTensor([input.rows, n]);
    launchGatedActivation(this.device, out.ptr, product.ptr, input.rows, n, activation);
    return out;
  }

  gatedActivation(x: Tensor, activation: Activation): Tensor {
    const input = asBf16(x, 'gatedActivation input');
    if (input.cols % 2 !== 0) throw new Error(`gatedActivation: ${input.cols} columns do not split into gate and up halves`);
    const n = input.cols / 2;
    requireMultipleOf8(n, 'gatedActivation width');
    const out = this.stepTensor([input.rows, n]);
    launchGatedActivation(this.device, out.ptr, input.ptr, input.rows, n, activation);
    return out;
  }

  createLoraWeights(shape: LoraShape): LoraWeights {
    requireMultipleOf8(shape.inFeatures, 'the input width of a LoRA-adapted linear');
    if (shape.sliceRows.length > LORA_MAX_SLICES) throw new Error(`createLoraWeights: ${shape.sliceRows.length} slices, the kernels take at most ${LORA_MAX_SLICES}`);
    const rp = Math.ceil(shape.maxRank / 16) * 16;
    const sized = new CudaLoraWeights(shape, rp, 0, 0, 0);
    const bytes = shape.slots * (sized.slotBytesA + sized.slotBytesB) + shape.slots * 4;
    const base = this.ownedAlloc(bytes);
    this.device.fillBytes(base, 0, bytes);
    const a = base;
    const b = a + shape.slots * sized.slotBytesA;
    return new CudaLoraWeights(shape, rp, a, b, b + shape.slots * sized.slotBytesB);
  }

  /** Converted to bf16 on the host and uploaded in stream order, behind the steps already queued. */
  setLoraSlot(weights: LoraWeights, slot: number, rank: number, slices: readonly (LoraSliceValues | null)[]): void {
    const w = asCudaLora(weights);
    assertLoraSlot(w.shape, slot, rank, slices);
    const { inFeatures, sliceRows } = w.shape;
    const a = new Uint16Array(w.slotBytesA / 2);
    const b = new Uint16Array(w.slotBytesB / 2);
    let first = 0;
    slices.forEach((slice, s) => {
      if (slice !== null) {
        for (let i = 0; i < rank * inFeatures; i++) a[s * w.rp * inFeatures + i] = floatToBf16Bits(slice.a[i]);
        for (let o = 0; o < sliceRows[s]; o++) {
          for (let k = 0; k < rank; k++) b[(first + o) * w.rp + k] = floatToBf16Bits(slice.b[o * rank + k]);
        }
      }
      first += sliceRows[s];
    });
    this.device.uploadAsync(w.a + slot * w.slotBytesA, new Int32Array(a.buffer));
    this.device.uploadAsync(w.b + slot * w.slotBytesB, new Int32Array(b.buffer));
    w.hostRanks[slot] = rank;
    this.device.uploadAsync(w.ranks, w.hostRanks);
  }

  addLora(out: Tensor, x: Tensor, weights: LoraWeights, step: StepInputs): void {
    const w = asCudaLora(weights);
    const input = asBf16(x, 'addLora input');
    const target = asBf16(out, 'addLora output');
    const s = asCudaStep(step);
    assertLoraOperands(w.shape, input.shape, target.shape, s.batch);
    if (s.batch.loraSlots === null) return;
    const { slots, inFeatures, sliceRows } = w.shape;
    const split = loraShrinkSplit(input.rows, inFeatures, sliceRows.length, w.rp, slots, this.device.info.multiprocessorCount);
    const v = this.stepTensor([split.splits * input.rows, sliceRows.length * w.rp], 'f32');
    const sliceEnds = sliceRows.map((_, i) => sliceRows.slice(0, i + 1).reduce((n, r) => n + r, 0));
    launchLora(this.device, {
      out: target.ptr,
      x: input.ptr,
      v: v.ptr,
      a: w.a,
      b: w.b,
      ranks: w.ranks,
      order: s.device.loraOrder,
      tiles: s.device.loraTiles,
      numTokens: input.rows,
      inDim: inFeatures,
      sliceEnds,
      rp: w.rp,
      slots,
      split,
    });
  }

  softcap(x: Tensor, cap: number): void {
    const t = asBf16(x, 'softcap input');
    launchSoftcap(this.device, t.ptr, t.numel, cap);
  }

  scale(x: Tensor, factor: number): void {
    const t = asBf16(x, 'scale input');
    launchScale(this.device, t.ptr, t.numel, factor);
  }

  silu(x: Tensor): void {
    const t = asBf16(x, 'silu input');
    launchSilu(this.device, t.ptr, t.numel);
  }

  xielu(x: Tensor, params: XieluParams): void {
    const t = asBf16(x, 'xielu input');
    launchXielu(this.device, t.ptr, t.numel, params);
  }

  headwiseLinear(x: Tensor, weight: Tensor): Tensor {
    const input = asBf16(x, 'headwiseLinear input');
    const w = asBf16(weight, 'headwiseLinear weight');
    const [heads, outDim, inDim] = w.shape;
    if (w.shape.length !== 3 || input.cols % heads !== 0 || input.cols / heads < inDim) {
      throw new Error(`headwiseLinear: input [${input.shape.join(', ')}] does not fit per-head weights [${w.shape.join(', ')}]`);
    }
    const width = input.cols / heads;
    const out = this.stepTensor([input.rows, heads * outDim]);
    if (input.rows === 0) return out;
    // Decode batches stream the weights: a GEMV-like kernel reads them at memory speed.
    if (input.rows <= HEADWISE_GEMV_MAX_ROWS && inDim % 8 === 0 && width % 8 === 0 && outDim % HEADWISE_GEMV_ROWS_PER_WARP === 0) {
      launchHeadwiseGemv(this.device, out.ptr, input.ptr, w.ptr, input.rows, heads, outDim, inDim, width);
      return out;
    }
    this.device.cublas.headwiseBf16(
      { ptr: out.ptr, rowStride: heads * outDim, headStride: outDim },
      { ptr: input.ptr, rowStride: heads * width, headStride: width },
      { ptr: w.ptr, layout: 'rows' },
      heads,
      input.rows,
      outDim,
      inDim,
    );
    return out;
  }

  mlaRopeAndCacheWrite(q: Tensor, kv: Tensor, latentNorm: Tensor, eps: number, rope: Tensor, cache: KvCache, layer: number, step: StepInputs, mla: MlaParams): void {
    const s = asCudaStep(step);
    if (s.batch.treeMask !== null) throw new Error('mlaAttention: MLA takes no tree mask (draft trees are verified on attention layers only)');
    const { numTokens } = s.batch;
    const queries = mlaQueries(q, mla, numTokens);
    const rows = asBf16(kv, 'mlaRopeAndCacheWrite kv');
    if (rows.rows !== numTokens || rows.cols !== mla.latentDim + mla.ropeDim) {
      throw new Error(`mlaRopeAndCacheWrite: kv [${rows.shape.join(', ')}] is not [${numTokens}, ${mla.latentDim} + ${mla.ropeDim}]`);
    }
    const table = asRopeTable(rope);
    if (table.rotaryDim !== mla.ropeDim) throw new Error(`mlaRopeAndCacheWrite: rotary dim ${table.rotaryDim} != rope dim ${mla.ropeDim}`);
    const norm = normWeight(latentNorm, mla.latentDim, 'mlaRopeAndCacheWrite');
    const kvCache = mlaLayerCache(cache, layer, mla);
    checkRopeAndSlots(s.batch, table, kvCache, 'mlaRopeAndCacheWrite');
    launchMlaCacheWrite(this.device, {
      q: queries.ptr,
      kv: rows.ptr,
      normWeight: norm.ptr,
      eps,
      cos: table.cos,
      sin: table.sin,
      rotaryRows: s.device.rotaryRows,
      positions: s.device.positions,
      queryTemperature: mla.queryTemperature ?? null,
      slotMapping: groupSlots(s, layerGroup(kvCache.layout, layer)),
      pool: kvCache.rows(layer),
      dtype: kvCache.dtype,
      rowScales: kvCache.rowScales(layer),
      numTokens,
      numHeads: mla.numHeads,
      nopeDim: mla.nopeDim,
      latentDim: mla.latentDim,
      ropeDim: mla.ropeDim,
    });
  }

  /**
   * `chunks` narrows the prefill tiles to those given ([count, 2] on the device), leaving the other
   * chunks' rows unwritten (mlaAttentionHeads runs them expanded).
   */
  mlaAttention(qLatent: Tensor, q: Tensor, cache: KvCache, layer: number, step: StepInputs, mla: MlaParams, selection: TokenSelection | null = null, chunks?: { tiles: DevicePtr; count: number }): Tensor {
    const s = asCudaStep(step);
    if (s.batch.treeMask !== null) throw new Error('mlaAttention: MLA takes no tree mask (draft trees are verified on attention layers only)');
    const { numTokens } = s.batch;
    const queries = mlaQueries(q, mla, numTokens);
    const latent = asBf16(qLatent, 'mlaAttention qLatent');
    if (latent.rows !== numTokens || latent.cols !== mla.numHeads * mla.latentDim) {
      throw new Error(`mlaAttention: qLatent [${latent.shape.join(', ')}] is not [${numTokens}, ${mla.numHeads} × ${mla.latentDim}]`);
    }
    const kv = mlaLayerCache(cache, layer, mla);
    if (s.checkedCache !== cache) {
      checkBlockTables(s.batch, kv.layout.numBlocks, kv.layout.blockSize);
      s.checkedCache = cache;
    }
    const out = this.stepTensor([numTokens, mla.numHeads * mla.latentDim]);
    if (selection !== null) {
      const selected = asCudaTokenSelection(selection, numTokens);
      if (mla.latentDim > SPARSE_MLA_MAX_LATENT || mla.ropeDim > SPARSE_MLA_MAX_ROPE) {
        throw new KeelError('invalid_model', `the CUDA backend's sparse MLA holds a latent of at most ${SPARSE_MLA_MAX_LATENT} and a rope part of at most ${SPARSE_MLA_MAX_ROPE}, not ${mla.latentDim} and ${mla.ropeDim}`);
      }
      launchSparseMla(this.device, {
        out: out.ptr,
        qLatent: latent.ptr,
        q: queries.ptr,
        pool: kv.rows(layer),
        dtype: kv.dtype,
        rowScales: kv.rowScales(layer),
        selection: selected.ptr,
        topK: selected.topK,
        queryStartLoc: s.device.queryStartLoc,
        blockTables: groupTables(s, layerGroup(kv.layout, layer)),
        numSeqs: s.batch.numSeqs,
        numTokens,
        maxBlocksPerSeq: s.batch.maxBlocksPerSeq,
        blockSize: kv.layout.blockSize,
        mla,
      });
      return out;
    }
    launchMlaAttention(this.device, {
      out: out.ptr,
      qLatent: latent.ptr,
      q: queries.ptr,
      pool: kv.rows(layer),
      dtype: kv.dtype,
      rowScales: kv.rowScales(layer),
      ...pagedSequences(s, kv, layer),
      mla,
      decodeSeqs: s.device.decodeSeqs,
      numDecode: s.plan.decodeSeqs.length,
      // Split by what the block tables can hold, as attention does: a recorded decode graph stays valid.
      maxDecodeSeqLen: s.batch.maxBlocksPerSeq * kv.layout.blockSize,
      prefillTiles: chunks?.tiles ?? s.device.prefillTiles,
      numPrefillTiles: chunks?.count ?? s.plan.prefillTiles.length / 2,
      workspace: (bytes) => this.arena.alloc(bytes),
      decodeKernel: this.mlaDecode,
    });
    return out;
  }

  /**
   * Chunks of MLA_EXPANSION_MIN_CHUNK tokens or more run expanded where `mlaPrefill` and the step
   * allow (mlaExpansion); the step's decodes and shorter chunks, and every token otherwise,
   * absorbed. With both, the absorbed projections run over every row and the expanded attention
   * then overwrites its chunks' rows.
   */
  mlaAttentionHeads(q: Tensor, cache: KvCache, layer: number, step: StepInputs, mla: MlaParams, up: MlaUpProjections, selection: TokenSelection | null = null): Tensor {
    const s = asCudaStep(step);
    const keyAbsorption = asBf16(up.keyAbsorption, 'mlaAttentionHeads keyAbsorption');
    const valueAbsorption = asBf16(up.valueAbsorption, 'mlaAttentionHeads valueAbsorption');
    const valueDim = valueAbsorption.shape[1];
    const expansion = selection === null ? this.mlaExpansion(s, mla, valueDim) : null;
    if (expansion === null) {
      const latent = this.mlaAttention(this.headwiseLinear(q, keyAbsorption), q, cache, layer, step, mla, selection);
      return this.headwiseLinear(latent, valueAbsorption);
    }
    const absorbedTiles = expansion.plan.absorbedTiles.length / 2;
    const heads =
      s.plan.decodeSeqs.length > 0 || absorbedTiles > 0
        ? asBf16(
            this.headwiseLinear(this.mlaAttention(this.headwiseLinear(q, keyAbsorption), q, cache, layer, step, mla, null, { tiles: s.device.mlaAbsorbedTiles, count: absorbedTiles }), valueAbsorption),
            'mlaAttentionHeads',
          )
        : this.stepTensor([s.batch.numTokens, mla.numHeads * valueDim]);
    const kv = mlaLayerCache(cache, layer, mla);
    launchMlaExpandedPrefill(this.device, {
      out: heads.ptr,
      q: mlaQueries(q, mla, s.batch.numTokens).ptr,
      pool: kv.rows(layer),
      dtype: kv.dtype,
      rowScales: kv.rowScales(layer),
      keyAbsorption: keyAbsorption.ptr,
      valueAbsorption: valueAbsorption.ptr,
      valueDim,
      mla,
      ...expansion,
      ...pagedSequences(s, kv, layer),
      wideTiles: s.device.mlaWideTiles,
      numWideTiles: expansion.plan.wideTiles.length / 2,
    });
    return heads;
  }

  /**
   * The step's expansion plan with its scratch, or null where the chunks run absorbed: `mlaPrefill`
   * is absorbed, the step has no chunk or a short one (no plan), the wgmma kernel cannot take the
   * shapes, the scratch would pass MLA_EXPANSION_MAX_BYTES, or it would have to grow while a graph
   * records.
   */
  private mlaExpansion(s: CudaStepInputs, mla: MlaParams, valueDim: number): Pick<MlaExpandedPrefillArgs, 'plan' | 'scratchBlocks' | 'scratchTables' | 'scratch'> | null {
    const plan = s.mlaExpansion;
    if (plan === null) return null;
    const unsupported = mlaExpansionUnsupported(this.device, mla, valueDim);
    if (unsupported !== null) {
      if (this.mlaPrefill === 'expanded') throw new KeelError('invalid_argument', `MLA prefill: the expanded form cannot run this layer: ${unsupported}`);
      return null;
    }
    const bytes = mlaExpansionBytes(plan.rows, mla, valueDim);
    const refusal =
      bytes > MLA_EXPANSION_MAX_BYTES
        ? `its scratch for ${plan.rows} keys would take ${bytes} bytes, past ${MLA_EXPANSION_MAX_BYTES}`
        : this.recording && (this.mlaScratch?.bytes ?? 0) < bytes
          ? 'its scratch would have to grow while a graph records'
          : null;
    if (refusal !== null) {
      if (this.mlaPrefill === 'expanded') throw new KeelError('invalid_argument', `MLA prefill: the expanded form cannot run this step: ${refusal}`);
      return null;
    }
    if (this.mlaScratch === null || this.mlaScratch.bytes < bytes) {
      // Grown by at least half again, so that a prompt's growing chunks do not reallocate every step.
      const grown = Math.min(MLA_EXPANSION_MAX_BYTES, Math.max(bytes, Math.ceil(1.5 * (this.mlaScratch?.bytes ?? 0))));
      this.mlaScratch = this.atLeast(this.mlaScratch, grown);
    }
    return { plan, scratchBlocks: s.device.mlaScratchBlocks, scratchTables: s.device.mlaScratchTables, scratch: this.mlaScratch.ptr };
  }

  indexerRopeAndCacheWrite(q: Tensor, k: Tensor, keyNorm: Tensor, keyNormBias: Tensor, eps: number, rope: Tensor, cache: KvCache, layer: number, step: StepInputs, indexer: IndexerParams): void {
    const s = asCudaStep(step);
    const { numTokens } = s.batch;
    const queries = indexerQueries(q, indexer, numTokens, 'indexerRopeAndCacheWrite');
    const keys = asBf16(k, 'indexerRopeAndCacheWrite k');
    if (keys.rows !== numTokens || keys.cols !== indexer.headDim) throw new Error(`indexerRopeAndCacheWrite: k [${keys.shape.join(', ')}] is not [${numTokens}, ${indexer.headDim}]`);
    const table = asRopeTable(rope);
    if (table.rotaryDim !== indexer.ropeDim) throw new Error(`indexerRopeAndCacheWrite: rotary dim ${table.rotaryDim} != rope dim ${indexer.ropeDim}`);
    const kv = indexerLayerCache(cache, layer, indexer);
    checkRopeAndSlots(s.batch, table, kv, 'indexerRopeAndCacheWrite');
    launchIndexerKeyWrite(this.device, {
      q: queries.ptr,
      k: keys.ptr,
      normWeight: normWeight(keyNorm, indexer.headDim, 'indexerRopeAndCacheWrite').ptr,
      normBias: normWeight(keyNormBias, indexer.headDim, 'indexerRopeAndCacheWrite bias').ptr,
      eps,
      cos: table.cos,
      sin: table.sin,
      rotaryRows: s.device.rotaryRows,
      slotMapping: groupSlots(s, layerGroup(kv.layout, layer)),
      keys: kv.indexKeys(layer),
      dtype: kv.dtype,
      keyScales: kv.indexKeyScales(layer),
      numTokens,
      indexer,
    });
  }

  indexerTopK(q: Tensor, weights: Tensor, cache: KvCache, layer: number, step: StepInputs, indexer: IndexerParams): TokenSelection {
    const s = asCudaStep(step);
    if (s.batch.treeMask !== null) throw new Error('indexerTopK: the indexer takes no tree mask (draft trees are verified on attention layers only)');
    const { numTokens } = s.batch;
    const queries = indexerQueries(q, indexer, numTokens, 'indexerTopK');
    const w = asCudaTensor(weights, 'indexerTopK weights');
    if (w.dtype !== 'f32' || w.rows !== numTokens || w.cols !== indexer.numHeads) {
      throw new Error(`indexerTopK: weights [${w.shape.join(', ')}] ${w.dtype} are not [${numTokens}, ${indexer.numHeads}] f32`);
    }
    const kv = indexerLayerCache(cache, layer, indexer);
    if (s.checkedCache !== cache) {
      checkBlockTables(s.batch, kv.layout.numBlocks, kv.layout.blockSize);
      s.checkedCache = cache;
    }
    const out = this.arena.alloc(Math.max(1, numTokens * indexer.topK) * 4);
    launchIndexerTopK(this.device, {
      q: queries.ptr,
      weights: w.ptr,
      keys: kv.indexKeys(layer),
      dtype: kv.dtype,
      keyScales: kv.indexKeyScales(layer),
      queryStartLoc: s.device.queryStartLoc,
      positions: s.device.positions,
      blockTables: groupTables(s, layerGroup(kv.layout, layer)),
      numSeqs: s.batch.numSeqs,
      numTokens,
      maxBlocksPerSeq: s.batch.maxBlocksPerSeq,
      blockSize: kv.layout.blockSize,
      indexer,
      out,
      alloc: (bytes) => this.arena.alloc(bytes),
    });
    return new CudaTokenSelection(numTokens, indexer.topK, out);
  }

  multiplyGate(x: Tensor, gate: Tensor, fn: GateFunction): Tensor {
    const input = asBf16(x, 'multiplyGate input');
    const g = asBf16(gate, 'multiplyGate gate');
    const group = gateGroup(input.shape, g.shape);
    const out = this.stepTensor(input.shape);
    launchMultiplyGate(this.device, { out: out.ptr, x: input.ptr, gate: g.ptr, numel: input.numel, cols: input.cols, group, fn });
    return out;
  }

  causalConv1d(x: Tensor, weight: Tensor, bias: Tensor | null, cache: KvCache, layer: number, step: StepInputs): Tensor {
    const input = asBf16(x, 'causalConv1d input');
    const w = asBf16(weight, 'causalConv1d weight');
    const [channels, kernel] = w.shape;
    const s = asCudaStep(step);
    if (input.cols !== channels || input.rows !== s.batch.numTokens) throw new Error(`causalConv1d: input [${input.shape.join(', ')}] does not fit weight [${w.shape.join(', ')}] and ${s.batch.numTokens} tokens`);
    const b = bias === null ? null : asBf16(bias, 'causalConv1d bias');
    if (b !== null && b.numel !== channels) throw new Error(`causalConv1d: a bias of ${b.numel} values for ${channels} channels`);
    const out = this.stepTensor(input.shape);
    launchCausalConv1d(this.device, out.ptr, input.ptr, w.ptr, b?.ptr ?? null, this.stateSlotArgs(cache, layer, s, 'causalConv1d'), channels, kernel);
    return out;
  }

  selectiveScan(xbc: Tensor, dt: Tensor, z: Tensor, aLog: Tensor, dtBias: Tensor, d: Tensor, cache: KvCache, layer: number, step: StepInputs, params: SelectiveScanParams): Tensor {
    const s = asCudaStep(step);
    const n = s.batch.numTokens;
    const [x, steps, gate] = [asBf16(xbc, 'selectiveScan xbc'), asBf16(dt, 'selectiveScan dt'), asBf16(z, 'selectiveScan z')];
    assertSelectiveScanShapes({ xbc: x.shape, dt: steps.shape, z: gate.shape }, n, params);
    const perHead = (t: Tensor, what: string) => {
      const f = asCudaTensor(t, `selectiveScan ${what}`);
      if (f.dtype !== 'f32' || f.numel !== params.numHeads) throw new Error(`selectiveScan: ${what} must be ${params.numHeads} float32 values (loadWeight with float32), not ${f.numel} ${f.dtype}`);
      return f.ptr;
    };
    const constants = { aLog: perHead(aLog, 'aLog'), dtBias: perHead(dtBias, 'dtBias'), d: perHead(d, 'd') };
    const slots = this.stateSlotArgs(cache, layer, s, 'selectiveScan');
    const { convElements } = asCudaKvCache(cache).stateSlots(layer, 'selectiveScan');
    const out = this.stepTensor([n, params.numHeads * params.headDim]);
    launchSelectiveScan(this.device, out.ptr, x.ptr, steps.ptr, gate.ptr, constants, slots, convElements, params);
    return out;
  }

  gatedDeltaRule(qkv: Tensor, ba: Tensor, aLog: Tensor, dtBias: Tensor, cache: KvCache, layer: number, step: StepInputs, params: DeltaRuleParams): Tensor {
    const s = asCudaStep(step);
    const n = s.batch.numTokens;
    const packed = asBf16(qkv, 'gatedDeltaRule qkv');
    const gates = asBf16(ba, 'gatedDeltaRule ba');
    assertDeltaRuleShapes(packed.shape, gates.shape, n, params);
    const float32s = (t: Tensor, count: number, what: string) => {
      const f = asCudaTensor(t, `gatedDeltaRule ${what}`);
      if (f.dtype !== 'f32' || f.numel !== count) throw new Error(`gatedDeltaRule: ${what} must be ${count} float32 values (loadWeight with float32), not ${f.numel} ${f.dtype}`);
      return f.ptr;
    };
    const slots = this.stateSlotArgs(cache, layer, s, 'gatedDeltaRule');
    const { convElements } = asCudaKvCache(cache).stateSlots(layer, 'gatedDeltaRule');
    const out = this.stepTensor([n, params.numValueHeads * params.valueDim]);
    const decays = { aLog: float32s(aLog, params.numValueHeads, 'aLog'), dtBias: float32s(dtBias, deltaRuleDecays(params), 'dtBias') };
    launchGatedDeltaRule(this.device, out.ptr, packed.ptr, gates.ptr, decays, slots, { convElements, ...params });
    return out;
  }

  gatedRmsNorm(x: Tensor, gate: Tensor, weight: Tensor, eps: number, activation: NormGate): Tensor {
    const input = asBf16(x, 'gatedRmsNorm input');
    const z = asBf16(gate, 'gatedRmsNorm gate');
    const w = asBf16(weight, 'gatedRmsNorm weight');
    if (z.numel !== input.numel || z.cols !== input.cols || input.cols % w.numel !== 0) {
      throw new Error(`gatedRmsNorm: input [${input.shape.join(', ')}], gate [${z.shape.join(', ')}] and a weight of ${w.numel} values do not fit`);
    }
    const out = this.stepTensor(input.shape);
    launchGatedRmsNorm(this.device, out.ptr, input.ptr, z.ptr, w.ptr, input.numel / w.numel, w.numel, eps, activation);
    return out;
  }

  /** A state layer's slots and the step's slot of each sequence, for the state kernels. */
  private stateSlotArgs(cache: KvCache, layer: number, step: CudaStepInputs, op: string): StateSlotArgs {
    const { batch } = step;
    if (batch.stateSlots === null) throw new Error(`${op}: the step has no state slots (BatchDescription.stateSlots), which a state layer reads`);
    const numSlots = asCudaKvCache(cache).layout.stateSlots ?? 0;
    const outside = batch.stateSlots.find((slot) => !(slot >= 0 && slot < numSlots));
    if (outside !== undefined) throw new RangeError(`${op}: state slot ${outside} is outside [0, ${numSlots})`);
    const { ptr, slotStride } = asCudaKvCache(cache).stateSlots(layer, op);
    return { state: ptr, slotStride, queryStartLoc: step.device.queryStartLoc, seqLens: step.device.seqLens, stateSlots: step.device.stateSlots, numSeqs: batch.numSeqs };
  }

  addInto(target: Tensor, x: Tensor, gate: Tensor | null): void {
    const t = asBf16(target, 'addInto target');
    const input = asBf16(x, 'addInto input');
    if (input.numel !== t.numel || input.cols !== t.cols) throw new Error(`addInto: input [${input.shape.join(', ')}] does not match target [${t.shape.join(', ')}]`);
    const g = gate === null ? null : asBf16(gate, 'addInto gate');
    if (g !== null && g.numel !== t.rows) throw new Error(`addInto: gate of ${g.numel} values for ${t.rows} rows`);
    requireMultipleOf8(t.cols, 'addInto width');
    launchAddInto(this.device, t.ptr, input.ptr, g?.ptr ?? 0, t.rows, t.cols);
  }

  allReduce(x: Tensor): Tensor {
    const t = asCudaTensor(x, 'allReduce input');
    this.groups?.tensor.allReduceSum({ ptr: t.ptr, dtype: t.dtype }, t.numel);
    return t;
  }

  /** NCCL gathers the devices' [rows, cols] blocks one after another; a kernel lays them side by side. */
  allGatherColumns(x: Tensor): Tensor {
    const t = asBf16(x, 'allGatherColumns input');
    const size = this.groups?.tensor.size ?? 1;
    if (size === 1) return t;
    requireMultipleOf8(t.cols, 'allGatherColumns width');
    const gathered = this.stepTensor([size, t.rows, t.cols]);
    this.groups!.tensor.allGather({ ptr: t.ptr, dtype: 'bf16' }, { ptr: gathered.ptr, dtype: 'bf16' }, t.numel);
    const out = this.stepTensor([t.rows, size * t.cols]);
    launchColumnBlocks(this.device, out.ptr, gathered.ptr, t.rows, t.cols, size);
    return out;
  }

  /** bf16 only: the receiving stage knows the shape, not the dtype (residual streams and logits are bf16). */
  sendToStage(x: Tensor, stage: number): void {
    const t = asBf16(x, 'sendToStage input');
    this.pipeline('sendToStage').send({ ptr: t.ptr, dtype: 'bf16' }, t.numel, stage);
  }

  receiveFromStage(shape: readonly number[], stage: number): Tensor {
    const out = this.stepTensor(shape);
    this.pipeline('receiveFromStage').recv({ ptr: out.ptr, dtype: 'bf16' }, out.numel, stage);
    return out;
  }

  /** The int32 positions travel as raw bits, two bf16 elements each: a send copies them, it adds nothing. */
  sendSelectionToStage(selection: TokenSelection, stage: number): void {
    const t = asCudaTokenSelection(selection, selection.numTokens);
    this.pipeline('sendSelectionToStage').send({ ptr: t.ptr, dtype: 'bf16' }, 2 * t.numTokens * t.topK, stage);
  }

  receiveSelectionFromStage(numTokens: number, topK: number, stage: number): TokenSelection {
    const out = this.arena.alloc(Math.max(1, numTokens * topK) * 4);
    this.pipeline('receiveSelectionFromStage').recv({ ptr: out, dtype: 'bf16' }, 2 * numTokens * topK, stage);
    return new CudaTokenSelection(numTokens, topK, out);
  }

  private pipeline(op: string): NcclCommunicator {
    if (this.groups === null) throw new Error(`${op}: this backend runs no pipeline stages`);
    return this.groups.pipeline as NcclCommunicator;
  }

  routeExperts(logits: Tensor, params: RoutingParams): ExpertRouting {
    const l = asCudaTensor(logits, 'routeExperts logits');
    if (l.shape.length !== 2) throw new Error(`routeExperts: logits [${l.shape.join(', ')}] are not [tokens, experts]`);
    const [numTokens, numExperts] = l.shape;
    assertRoutingParams(params, numExperts);
    if (numExperts > MAX_ROUTED_EXPERTS) throw new KeelError('invalid_model', `the CUDA backend routes among at most ${MAX_ROUTED_EXPERTS} experts, not ${numExperts}`);
    if (params.topK > MAX_TOP_K) throw new KeelError('invalid_model', `the CUDA backend routes each token to at most ${MAX_TOP_K} experts, not ${params.topK}`);
    if (params.groups !== null && params.groups.numGroups > MAX_EXPERT_GROUPS) {
      throw new KeelError('invalid_model', `the CUDA backend routes with at most ${MAX_EXPERT_GROUPS} expert groups, not ${params.groups.numGroups}`);
    }
    const bias = params.selectionBias === null ? null : asCudaTensor(params.selectionBias, 'routing selection bias');
    if (bias !== null && bias.numel !== numExperts) throw new Error(`routeExperts: selection bias of ${bias.numel} values for ${numExperts} experts`);
    return launchRouteExperts(this.device, {
      logits: l.ptr,
      logitsF32: l.dtype === 'f32',
      bias: bias?.ptr ?? 0,
      biasDtype: bias?.dtype ?? null,
      numTokens,
      numExperts,
      params,
      done: this.device.arrivalCounters(1),
      alloc: (bytes) => this.arena.alloc(bytes),
    });
  }

  expertMlp(x: Tensor, routing: ExpertRouting, experts: ExpertWeights, activation: Activation): Tensor {
    const input = asBf16(x, 'expertMlp input');
    if (!(routing instanceof CudaExpertRouting)) throw new Error('CudaBackend: routing is not from routeExperts');
    if (routing.numTokens !== input.rows) throw new Error(`expertMlp: routing of ${routing.numTokens} tokens for ${input.rows} rows`);
    const hidden = input.cols;
    const n = expertWidth(experts, hidden, routing.numExperts);
    requireMultipleOf8(hidden, 'the hidden size of an expert MLP');
    requireMultipleOf8(n, 'the intermediate size of an expert');
    if (input.rows === 0) return this.stepTensor([0, hidden]);
    const quantized = this.quantizedExperts(experts, input.rows);
    if (quantized !== null && !quantized.kernelsTake) {
      // Shapes the quantized kernels do not take: the held experts dequantized to bf16, then the bf16 kernels.
      const [gateUp, down] = [this.dequantized!.ptr, this.dequantizedDown!.ptr];
      // An expert's rows share its act-order permutation, if any.
      launchDequantize(this.device, gateUp, quantized.gateUp, experts.gateUp.shape[1]);
      launchDequantize(this.device, down, quantized.down, experts.down.shape[1]);
      const bf16 = (t: Tensor, ptr: DevicePtr) => new CudaTensor([...t.shape], ptr, 'bf16');
      return this.expertMlp(input, routing, { ...experts, gateUp: bf16(experts.gateUp, gateUp), down: bf16(experts.down, down) }, activation);
    }
    const out = this.stepTensor([input.rows, hidden]);
    const bias = (t: Tensor | null, what: string) => (t === null ? 0 : asBf16(t, what).ptr);
    // What every format's launch takes; the weights, their scales and their format follow.
    const launch = {
      x: input.ptr,
      out: out.ptr,
      routing,
      first: experts.first,
      count: experts.count,
      hidden,
      n,
      gateUpBias: bias(experts.gateUpBias, 'expert gate/up bias'),
      downBias: bias(experts.downBias, 'expert down bias'),
      activation,
      scratch: (elements: number) => this.stepTensor([elements]).ptr,
    };
    if (quantized !== null) {
      launchExpertMlp(this.device, {
        ...launch,
        gateUp: quantized.gateUp.codes,
        down: quantized.down.codes,
        mxfp4: false,
        quant: { gateUp: quantized.gateUp, down: quantized.down },
        gateUpScales: quantized.gateUp.scales,
        downScales: quantized.down.scales,
      });
      return out;
    }
    const mxfp4 = experts.gateUp instanceof CudaMxfp4Tensor;
    if (mxfp4 !== experts.down instanceof CudaMxfp4Tensor) throw new Error('expertMlp: gate/up and down weights are in different formats (MXFP4 and bf16)');
    const matrix = (t: Tensor, what: string) => (t instanceof CudaMxfp4Tensor ? { ptr: t.blocks, scales: t.scales } : { ptr: asBf16(t, what).ptr, scales: 0 });
    if (mxfp4 && (hidden % 32 !== 0 || n % 32 !== 0)) throw new KeelError('invalid_model', `MXFP4 experts need a hidden size and width that are multiples of 32, not ${hidden} and ${n}`);
    const [gateUp, down] = [matrix(experts.gateUp, 'expert gate/up weights'), matrix(experts.down, 'expert down weights')];
    launchExpertMlp(this.device, { ...launch, gateUp: gateUp.ptr, down: down.ptr, mxfp4, quant: null, gateUpScales: gateUp.scales, downScales: down.scales });
    return out;
  }

  /**
   * For int4/int8/fp8 experts: their stacks, and whether the step's expert kernels read them (the
   * GEMVs up to GEMV_MAX_TOKENS tokens, whole 16-byte chunks per scale group; the grouped GEMMs
   * past them, whole 32-column stages per group); null for bf16 and MXFP4 experts.
   */
  private quantizedExperts(experts: ExpertWeights, rows: number): { gateUp: CudaQuantizedTensor; down: CudaQuantizedTensor; kernelsTake: boolean } | null {
    const [gateUp, down] = [experts.gateUp, experts.down];
    const quantized = gateUp instanceof CudaQuantizedExperts;
    if (quantized !== down instanceof CudaQuantizedExperts) throw new Error('expertMlp: gate/up and down weights are in different formats (one quantized, one not)');
    if (!quantized) return null;
    const pair = { gateUp: gateUp.stacked, down: (down as CudaQuantizedExperts).stacked };
    if (pair.gateUp.format !== pair.down.format) throw new Error(`expertMlp: gate/up experts in ${pair.gateUp.format} but down experts in ${pair.down.format}`);
    const takes = rows <= GEMV_MAX_TOKENS ? expertGemvTakes : expertGemmTakes;
    return { ...pair, kernelsTake: takes(pair.gateUp) && takes(pair.down) };
  }

  moe(x: Tensor, weights: MoeWeights): Tensor {
    const input = asBf16(x, 'moe input');
    // The fused decode kernel weighs the experts' outputs: input-weighted routes (Llama 4) take the composed path.
    const fused = input.rows === 1 && this.moeDecode === 'fused' && weights.routing.weightInputs !== true;
    return (fused && this.fusedMoe(input, weights)) || composeMoe(this, input, weights);
  }

  /** A single token's block in one launch (moe-decode.cu), or null for what that kernel does not take. */
  private fusedMoe(x: CudaTensor, w: MoeWeights): CudaTensor | null {
    const bf16 = (t: Tensor | null) => (t instanceof CudaTensor && t.dtype === 'bf16' ? t : null);
    const mxfp4 = w.experts.gateUp instanceof CudaMxfp4Tensor;
    const matrix = (t: Tensor) => {
      if (t instanceof CudaMxfp4Tensor) return mxfp4 ? { ptr: t.blocks, scales: t.scales } : null;
      const dense = bf16(t);
      return dense === null || mxfp4 ? null : { ptr: dense.ptr, scales: 0 };
    };
    const [router, gateUp, down] = [bf16(w.router), matrix(w.experts.gateUp), matrix(w.experts.down)];
    // Quantized weights, experts of two formats, MXFP4 beside a shared expert, and a shared expert
    // with an activation of its own take the split path (which refuses mixed formats).
    if (router === null || gateUp === null || down === null || (mxfp4 && w.shared !== null)) return null;
    let shared: { gateUp: CudaTensor; down: CudaTensor; gate: CudaTensor | null } | null = null;
    if (w.shared !== null) {
      const [sharedGateUp, sharedDown, gate] = [bf16(w.shared.gateUp), bf16(w.shared.down), bf16(w.shared.gate)];
      const sameActivation = JSON.stringify(w.shared.activation) === JSON.stringify(w.activation);
      if (sharedGateUp === null || sharedDown === null || (w.shared.gate !== null && gate === null) || !sameActivation) return null;
      shared = { gateUp: sharedGateUp, down: sharedDown, gate };
    }
    const hidden = x.cols;
    const [numExperts, routerIn] = router.shape;
    if (router.shape.length !== 2 || routerIn !== hidden) throw new Error(`moe: router [${router.shape.join(', ')}] does not fit input [${x.shape.join(', ')}]`);
    assertRoutingParams(w.routing, numExperts);
    const n = expertWidth(w.experts, hidden, numExperts);
    const m = shared === null ? 0 : shared.gateUp.rows / 2;
    if (shared !== null && (shared.gateUp.cols !== hidden || shared.down.rows !== hidden || shared.down.cols !== m || (shared.gate !== null && shared.gate.numel !== hidden))) {
      throw new Error(`moe: shared expert [${shared.gateUp.shape.join(', ')}] / [${shared.down.shape.join(', ')}] does not fit input [${x.shape.join(', ')}]`);
    }
    const groups = w.routing.groups;
    const width = mxfp4 ? 32 : 8;
    if (hidden % width !== 0 || n % width !== 0 || m % 8 !== 0 || numExperts > MAX_ROUTED_EXPERTS || w.routing.topK > MAX_TOP_K || (groups !== null && groups.numGroups > MAX_EXPERT_GROUPS)) return null;
    const selection = w.routing.selectionBias === null ? null : asCudaTensor(w.routing.selectionBias, 'routing selection bias');
    if (selection !== null && selection.numel !== numExperts) throw new Error(`moe: selection bias of ${selection.numel} values for ${numExperts} experts`);
    const routerBias = w.routerBias === null ? null : asBf16(w.routerBias, 'router bias');
    if (routerBias !== null && routerBias.numel !== numExperts) throw new Error(`moe: router bias of ${routerBias.numel} values for ${numExperts} experts`);
    const shape = { hidden, n, m, numExperts, topK: w.routing.topK, activation: w.activation, mxfp4 };
    const blocks = moeDecodeBlocks(this.device, shape);
    if (blocks === 0) return null;
    const out = this.stepTensor([1, hidden]);
    const ptr = (t: Tensor | null, what: string) => (t === null ? 0 : asBf16(t, what).ptr);
    launchMoeDecode(
      this.device,
      {
        ...shape,
        out: out.ptr,
        x: x.ptr,
        router: router.ptr,
        routerBias: routerBias?.ptr ?? 0,
        selectionBias: selection?.ptr ?? 0,
        selectionBiasDtype: selection?.dtype ?? null,
        routing: w.routing,
        first: w.experts.first,
        count: w.experts.count,
        gateUp: gateUp.ptr,
        down: down.ptr,
        gateUpScales: gateUp.scales,
        downScales: down.scales,
        gateUpBias: ptr(w.experts.gateUpBias, 'expert gate/up bias'),
        downBias: ptr(w.experts.downBias, 'expert down bias'),
        sharedGateUp: shared?.gateUp.ptr ?? 0,
        sharedDown: shared?.down.ptr ?? 0,
        sharedGate: shared?.gate?.ptr ?? 0,
        sync: this.device.arrivalCounters(2),
        alloc: (bytes) => this.arena.alloc(bytes),
      },
      blocks,
    );
    return out;
  }

  gatherLogitsRows(x: Tensor, step: StepInputs): Tensor {
    const input = asBf16(x, 'gatherLogitsRows input');
    const s = asCudaStep(step);
    for (const row of s.batch.logitsIndices) {
      if (!(row >= 0 && row < input.rows)) throw new RangeError(`gatherLogitsRows: row ${row} is outside [0, ${input.rows})`);
    }
    return this.gather(input, s.device.logitsIndices, s.batch.logitsIndices.length);
  }

  gatherRows(x: Tensor, rows: Int32Array): Tensor {
    const input = asBf16(x, 'gatherRows input');
    for (const row of rows) if (!(row >= 0 && row < input.rows)) throw new RangeError(`gatherRows: row ${row} is outside [0, ${input.rows})`);
    return this.gather(input, this.uploadIndices(rows), rows.length);
  }

  concatColumns(parts: readonly Tensor[]): Tensor {
    const tensors = parts.map((p) => asBf16(p, 'concatColumns part'));
    const rows = tensors[0]?.rows ?? 0;
    if (tensors.some((t) => t.rows !== rows)) throw new Error(`concatColumns: parts of ${tensors.map((t) => t.rows).join(', ')} rows`);
    const cols = tensors.reduce((n, t) => n + t.cols, 0);
    const out = this.stepTensor([rows, cols]);
    let offset = 0;
    for (const t of tensors) {
      launchCopyColumns(this.device, out.ptr, cols, offset, t.ptr, rows, t.cols);
      offset += t.cols;
    }
    return out;
  }

  /** Row indices in the step arena (uploaded behind the queued work). */
  private uploadIndices(indices: Int32Array): DevicePtr {
    const ptr = this.arena.alloc(Math.max(indices.byteLength, 4));
    this.device.uploadAsync(ptr, indices);
    return ptr;
  }

  /** Waits for the queued work, converts on the device if needed, and copies to a new array. */
  toHost(x: Tensor): Float32Array {
    const t = asCudaTensor(x, 'toHost input');
    const out = new Float32Array(t.numel);
    if (t.numel === 0) return out;
    if (t.dtype === 'f32') {
      this.device.download(out, t.ptr);
      return out;
    }
    this.readback = this.atLeast(this.readback, out.byteLength);
    launchBf16ToF32(this.device, this.readback.ptr, t.ptr, t.numel);
    this.device.download(out, this.readback.ptr);
    return out;
  }

  sampleRows(x: Tensor, draws: readonly Draw[]): SampledTokens {
    const t = asBf16(x, 'sampleRows input');
    const n = draws.length;
    checkDraws(draws, t.rows, t.cols, this.sampled.rows);
    const packed = packDraws(draws, t.cols);
    if (n === 0) return { read: () => unpackDrawResults(new Int32Array(0), 0, 0) };
    if (this.sampled.capacity < n) {
      // The previous ids move along: this pass's pending tokens are read from them.
      const grown = this.ownedAlloc(4 * n);
      this.device.copyAsync(grown, this.sampled.ptr, 4 * this.sampled.rows);
      this.disposeGraphs();
      this.freeOwned(this.sampled.ptr);
      this.sampled = { ptr: grown, capacity: n, rows: this.sampled.rows };
    }
    const history = this.draftHistoryFor(draftHistoryRows(draws));
    const resultWords = (2 + 2 * packed.topWidth) * n;
    const drawsBuffer = (this.drawsBuffer = this.atLeast(this.drawsBuffer, packed.words.byteLength));
    const results = (this.drawResults = this.atLeast(this.drawResults, 4 * resultWords));
    this.device.uploadAsync(drawsBuffer.ptr, packed.words);
    launchSampleRows(this.device, n, packed, { out: results.ptr, x: t.ptr, cols: t.cols, packed: drawsBuffer.ptr, previousIds: this.sampled.ptr, draftHistory: history });
    this.device.copyAsync(this.sampled.ptr, results.ptr, 4 * n);
    this.sampled.rows = n;
    this.lastPass = { rows: n, topWidth: packed.topWidth };
    const download = this.device.downloadAsync(results.ptr, resultWords);
    return { read: () => unpackDrawResults(download.read(), n, packed.topWidth) };
  }

  /** The draft history with at least `rows` rows, its rows kept as it grows (0: none needed, a null pointer). */
  private draftHistoryFor(rows: number): DevicePtr {
    const have = this.draftHistory;
    if (rows === 0) return have?.ptr ?? 0;
    if (have !== null && have.rows >= rows) return have.ptr;
    const grown = { ptr: this.ownedAlloc(4 * DRAFT_HISTORY_COLUMNS * rows), rows };
    if (have !== null) {
      this.device.copyAsync(grown.ptr, have.ptr, 4 * DRAFT_HISTORY_COLUMNS * have.rows);
      this.freeOwned(have.ptr);
    }
    this.draftHistory = grown;
    return grown.ptr;
  }

  mapSampledIds(map: Int32Array): void {
    launchMapIds(this.device, this.sampled.ptr, this.idMap(map), this.sampled.rows, map.length);
  }

  /** An id map on the device, uploaded the first time it is used. */
  private idMap(map: Int32Array): DevicePtr {
    let ptr = this.idMaps.get(map);
    if (ptr === undefined) {
      ptr = this.ownedAlloc(Math.max(map.byteLength, 4));
      this.device.uploadAsync(ptr, map);
      this.idMaps.set(map, ptr);
    }
    return ptr;
  }

  beginDraftTrees(numTrees: number, size: number): DraftTrees {
    if (!(Number.isInteger(numTrees) && numTrees >= 0 && Number.isInteger(size) && size >= 1)) throw new RangeError(`beginDraftTrees: ${numTrees} trees of ${size} nodes`);
    const words = 3 * numTrees * size;
    this.draftTreeBuffer = this.atLeast(this.draftTreeBuffer, Math.max(4 * words, 4));
    const table: DraftTreeTable = { ptr: this.draftTreeBuffer.ptr, numTrees, size };
    const trees = new CudaDraftTrees(table, ++this.draftTreeSerial, () => this.device.downloadAsync(this.currentTrees(trees, 'read').table.ptr, words).read());
    return trees;
  }

  /** `trees` as this backend's latest: a later beginDraftTrees reuses the buffer of the ones before. */
  private currentTrees(trees: DraftTrees, op: string): CudaDraftTrees {
    if (!(trees instanceof CudaDraftTrees)) throw new Error(`${op}: draft trees not from a CudaBackend's beginDraftTrees`);
    if (trees.serial !== this.draftTreeSerial) throw new Error(`${op}: draft trees used after a later beginDraftTrees reused their buffer`);
    return trees;
  }

  expandDraftTrees(trees: DraftTrees, depth: DraftTreeDepth, map: Int32Array | null): void {
    const { table } = this.currentTrees(trees, 'expandDraftTrees');
    const pass = this.lastPass;
    if (pass === null || this.drawResults === null) throw new Error('expandDraftTrees: no sampling pass holds the candidates');
    checkDraftTreeDepth(trees, depth, pass.rows);
    const ids = table.numTrees * table.size;
    if (this.sampled.capacity < ids) {
      // The trees' tokens replace the pass's ids: nothing to carry over.
      const grown = this.ownedAlloc(4 * ids);
      this.disposeGraphs();
      this.freeOwned(this.sampled.ptr);
      this.sampled = { ptr: grown, capacity: ids, rows: this.sampled.rows };
    }
    const packed = new Int32Array(4 * table.numTrees);
    [depth.counts, depth.frontiers, depth.keeps, depth.rows].forEach((a, i) => packed.set(a, i * table.numTrees));
    const results = this.drawResults.ptr;
    const top = { ids: results + 8 * pass.rows, logprobs: results + 8 * pass.rows + 4 * pass.rows * pass.topWidth, topWidth: pass.topWidth };
    launchExpandDraftTrees(this.device, table, this.uploadIndices(packed), top, map === null ? 0 : this.idMap(map), map?.length ?? 0, this.sampled.ptr);
    this.sampled.rows = ids;
  }

  writeDraftTreeMask(trees: DraftTrees, step: StepInputs, chunkTrees: Int32Array): void {
    const { table } = this.currentTrees(trees, 'writeDraftTreeMask');
    const s = asCudaStep(step);
    if (s.batch.treeMask === null) throw new Error('writeDraftTreeMask: the step has no tree mask');
    checkDraftTreeChunks(trees, s.batch, chunkTrees, 'writeDraftTreeMask');
    launchDraftTreeMask(this.device, s.device.treeMask, s.batch.treeMaskWords, s.device.queryStartLoc, this.uploadIndices(chunkTrees), s.batch.numSeqs, table);
  }

  readDraftTreeCacheRows(cache: KvCache, layer: number, trees: DraftTrees, step: StepInputs, chunkTrees: Int32Array, slots: Int32Array): Tensor {
    const { table } = this.currentTrees(trees, 'readDraftTreeCacheRows');
    const kv = asCudaKvCache(cache);
    const s = asCudaStep(step);
    checkDraftTreeChunks(trees, s.batch, chunkTrees, 'readDraftTreeCacheRows');
    const { numTokens, numSeqs } = s.batch;
    if (slots.length !== numTokens + numSeqs) throw new RangeError(`readDraftTreeCacheRows: ${slots.length} slots for ${numTokens} tokens in ${numSeqs} chunks`);
    const { width } = rowsKvLayer(kv.layout, layer, slots, 'readDraftTreeCacheRows');
    const picked = this.arena.alloc(Math.max(4 * numTokens, 4));
    launchDraftTreeSlots(this.device, picked, this.uploadIndices(slots), s.device.queryStartLoc, this.uploadIndices(chunkTrees), numSeqs, table);
    const out = this.stepTensor([numTokens, width]);
    launchGatherRows(this.device, out.ptr, kv.rows(layer), picked, numTokens, width);
    return out;
  }

  replayForward<T>(step: StepInputs, owner: object, forward: () => T): T {
    const s = asCudaStep(step);
    checkReplayedStep(s.batch, this.limits);
    assertTokenSources(s.batch, this.sampled.rows);
    if (this.arena.generation !== this.graphsGeneration) this.disposeGraphs();
    // Shapes first met while recording are timed now; the graphs that recorded cuBLAS's pick for one that now runs another record again.
    const stale = this.gemmTuner?.tunePending();
    if (stale !== undefined && stale.size > 0) this.disposeGraphs(stale);
    const b = s.batch;
    let ownerId = this.graphOwners.get(owner);
    if (ownerId === undefined) this.graphOwners.set(owner, (ownerId = this.graphOwners.size));
    // A step with adapters runs the LoRA launches, one without none: they are recorded apart; so
    // are verification steps with a tree mask (other kernels) and without.
    const key = `${ownerId}:${b.numTokens}/${b.numSeqs}/${b.maxBlocksPerSeq}/${b.logitsIndices.length}/${s.plan.decodeSeqs.length}/${s.plan.prefillTiles.length}/${s.plan.wideTiles.length}/${this.prefillAttention}/${b.loraSlots === null ? 'base' : 'lora'}/${b.treeMaskWords}/${b.verificationChunks === null ? 0 : 1}`;
    const recorded = this.graphs.get(key);
    if (recorded) {
      recorded.graph.replay();
      // Later ops of the step allocate past the tensors the graph writes, as after an eager forward.
      this.arena.advanceTo(recorded.arenaEnd);
      // The recording's own result: this owner's graphs of one shape record one forward.
      return recorded.out as T;
    }
    let out: { value: T } | null = null;
    this.recordingKey = key;
    const graph = this.captureGraph(() => {
      out = { value: forward() };
    });
    this.recordingKey = '';
    graph.replay();
    // A step that outgrew the arena used chunks the next reset frees: run it once, keep nothing.
    if (this.arena.overflowed) {
      this.device.synchronize();
      graph.dispose();
    } else {
      this.graphs.set(key, { graph, out: out!.value, arenaEnd: this.arena.position });
    }
    return out!.value;
  }

  markTime(): TimeMark {
    return this.timeMarks.mark();
  }

  elapsedMs(start: TimeMark, end: TimeMark): number {
    return this.timeMarks.elapsedMs(start, end);
  }

  /**
   * Records the ops that `record` issues into a CUDA graph for replay (decode steps). Call
   * beginStep before capturing and before each replay: the replay reads that step's uploads.
   */
  captureGraph(record: () => void): CudaGraph {
    this.recording = true;
    try {
      return this.device.captureGraph(record);
    } finally {
      this.recording = false;
    }
  }

  dispose(): void {
    this.device.synchronize();
    this.swapper?.dispose();
    for (const space of this.swapSpaces) this.device.driver.freeHostAddress(space.address);
    for (const stream of this.weightStreams) stream.dispose();
    this.disposeGraphs();
    this.timeMarks.dispose();
    for (const ptr of this.owned) this.device.free(ptr);
    this.owned.length = 0;
    this.arena.dispose();
    this.groups?.tensor.destroy();
    this.groups?.pipeline.destroy();
    this.device.dispose();
  }

  /** Drops the recorded graphs, or only those named in `keys` (the arena's generation stays then). */
  private disposeGraphs(keys?: ReadonlySet<string>): void {
    this.device.synchronize();
    for (const [key, { graph }] of this.graphs) {
      if (keys !== undefined && !keys.has(key)) continue;
      graph.dispose();
      this.graphs.delete(key);
    }
    if (keys === undefined) this.graphsGeneration = this.arena.generation;
  }

  private gather(src: CudaTensor, indices: DevicePtr, rows: number): CudaTensor {
    requireMultipleOf8(src.cols, 'row width');
    const out = this.stepTensor([rows, src.cols]);
    launchGatherRows(this.device, out.ptr, src.ptr, indices, rows, src.cols);
    return out;
  }

  private stepTensor(shape: readonly number[], dtype: DeviceDType = 'bf16'): CudaTensor {
    const bytes = shape.reduce((n, d) => n * d, 1) * (dtype === 'f32' ? 4 : 2);
    const ptr = this.arena.alloc(bytes);
    // All-ones bytes are a NaN in bf16 and in f32.
    if (this.poison) this.device.fillBytes(ptr, 0xff, bytes);
    return new CudaTensor([...shape], ptr, dtype);
  }

  /** `buffer` if it holds `bytes`, else a new owned buffer that does (the old one freed). */
  private atLeast(buffer: { ptr: DevicePtr; bytes: number } | null, bytes: number): { ptr: DevicePtr; bytes: number } {
    if (buffer !== null && buffer.bytes >= bytes) return buffer;
    if (buffer !== null) this.freeOwned(buffer.ptr);
    return { ptr: this.ownedAlloc(bytes), bytes };
  }

  private ownedAlloc(bytes: number): DevicePtr {
    const ptr = this.device.alloc(bytes);
    this.owned.push(ptr);
    return ptr;
  }

  private freeOwned(ptr: DevicePtr): void {
    this.device.synchronize();
    this.device.free(ptr);
    this.owned.splice(this.owned.indexOf(ptr), 1);
  }
}

// A tensor from another backend reaching CUDA ops is a wiring bug, not a user error.
function asCudaTensor(t: Tensor, what: string): CudaTensor {
  if (t instanceof CudaQuantizedTensor) throw new Error(`CudaBackend: ${what} is a quantized weight (${t.format}), which only linear and gatedLinear multiply by`);
  if (t instanceof CudaMxfp4Tensor) throw new Error(`CudaBackend: ${what} is an MXFP4 weight, which only expertMlp multiplies by`);
  if (t instanceof CudaQuantizedExperts) throw new Error(`CudaBackend: ${what} are quantized experts (${t.stacked.format}), which only expertMlp multiplies by`);
  if (t instanceof CudaSparse24Tensor) throw new Error(`CudaBackend: ${what} is a 2:4 sparse weight, which only linear and gatedLinear multiply by`);
  if (!(t instanceof CudaTensor)) throw new Error(`CudaBackend: ${what} is not a CUDA tensor`);
  return t;
}

function asBf16(t: Tensor, what: string): CudaTensor {
  const tensor = asCudaTensor(t, what);
  if (tensor.dtype !== 'bf16') throw new Error(`CudaBackend: ${what} is ${tensor.dtype}, expected bf16`);
  return tensor;
}

function asCudaLora(w: LoraWeights): CudaLoraWeights {
  if (!(w instanceof CudaLoraWeights)) throw new Error('CudaBackend: LoRA weights are not from createLoraWeights');
  return w;
}

function asRopeTable(t: Tensor): CudaRopeTable {
  if (!(t instanceof CudaRopeTable)) throw new Error('CudaBackend: rope is not a table from uploadRopeTable');
  return t;
}

function asCudaWeightStream(s: WeightStream): CudaWeightStream {
  if (!(s instanceof CudaWeightStream)) throw new Error('CudaBackend: weight stream is not from createWeightStream');
  return s;
}

function asCudaSwapSpace(s: SwapSpace): CudaSwapSpace {
  if (!(s instanceof CudaSwapSpace)) throw new Error('CudaBackend: swap space is not from createSwapSpace');
  return s;
}

function asCudaKvCache(c: KvCache): CudaKvCache {
  if (!(c instanceof CudaKvCache)) throw new Error('CudaBackend: cache is not from createKvCache');
  return c;
}

function asCudaStep(step: StepInputs): CudaStepInputs {
  if (!(step instanceof CudaStepInputs)) throw new Error('CudaBackend: step inputs are not from beginStep');
  return step;
}

function normWeight(weight: Tensor, width: number, op: string): CudaTensor {
  const w = asBf16(weight, `${op} weight`);
  if (w.numel !== width) throw new Error(`${op}: weight of ${w.numel} values for rows of ${width}`);
  requireMultipleOf8(width, `${op} width`);
  return w;
}

/** ropeAndCacheWrite's norm as device pointers (v 0 for none), each weight checked against the head dim. */
function headNormWeights(norm: HeadNorm, headDim: number): { q: DevicePtr; k: DevicePtr; v: DevicePtr; eps: number } {
  const weight = (t: Tensor) => normWeight(t, headDim, 'ropeAndCacheWrite norm').ptr;
  return { q: weight(norm.q), k: weight(norm.k), v: norm.v === null ? 0 : weight(norm.v), eps: norm.eps };
}

function asPackedQkv(qkv: Tensor, attn: AttentionParams): CudaTensor {
  const packed = asBf16(qkv, 'qkv');
  assertPackedQkvWidth(packed.cols, attn);
  if (attn.numHeads % attn.numKvHeads !== 0) {
    throw new KeelError('invalid_model', `${attn.numHeads} query heads do not split evenly over ${attn.numKvHeads} kv heads`);
  }
  return packed;
}

function layerCache(cache: KvCache, layer: number, attn: AttentionParams): CudaKvCache {
  const kv = asCudaKvCache(cache);
  attentionKvLayer(kv.layout, layer, attn);
  return kv;
}

function mlaQueries(q: Tensor, mla: MlaParams, numTokens: number): CudaTensor {
  const t = asBf16(q, 'MLA queries');
  if (t.rows !== numTokens || t.cols !== mla.numHeads * (mla.nopeDim + mla.ropeDim)) {
    throw new Error(`MLA queries [${t.shape.join(', ')}] are not [${numTokens}, ${mla.numHeads} × (${mla.nopeDim} + ${mla.ropeDim})]`);
  }
  // The kernels read each head's rotary part in 16-byte chunks.
  if (mla.nopeDim % 8 !== 0) throw new KeelError('invalid_model', `the CUDA backend needs an MLA nope dim that is a multiple of 8, not ${mla.nopeDim}`);
  return t;
}

/** indexerTopK's choice on the device: [numTokens, topK] int32 positions in step memory. */
export class CudaTokenSelection implements TokenSelection {
  readonly numTokens: number;
  readonly topK: number;
  readonly ptr: DevicePtr;

  constructor(numTokens: number, topK: number, ptr: DevicePtr) {
    this.numTokens = numTokens;
    this.topK = topK;
    this.ptr = ptr;
  }
}

function asCudaTokenSelection(selection: TokenSelection, numTokens: number): CudaTokenSelection {
  if (!(selection instanceof CudaTokenSelection)) throw new Error('CudaBackend: selection is not from indexerTopK');
  if (selection.numTokens !== numTokens) throw new Error(`mlaAttention: a selection of ${selection.numTokens} tokens for a step of ${numTokens}`);
  return selection;
}

/** The kernels stage a token's queries in 8192 floats of shared memory and read keys in 16-byte chunks. */
function indexerQueries(q: Tensor, indexer: IndexerParams, numTokens: number, op: string): CudaTensor {
  const t = asBf16(q, `${op} q`);
  if (t.rows !== numTokens || t.cols !== indexer.numHeads * indexer.headDim) {
    throw new Error(`${op}: q [${t.shape.join(', ')}] is not [${numTokens}, ${indexer.numHeads} × ${indexer.headDim}]`);
  }
  if (indexer.headDim % 8 !== 0 || indexer.numHeads * indexer.headDim > 8192 || indexer.headDim > 1024) {
    throw new KeelError('invalid_model', `the CUDA backend's lightning indexer needs a head dim that is a multiple of 8 and at most 8192 query values per token, not ${indexer.numHeads} × ${indexer.headDim}`);
  }
  return t;
}

function indexerLayerCache(cache: KvCache, layer: number, indexer: IndexerParams): CudaKvCache {
  const kv = asCudaKvCache(cache);
  indexKeysKvLayer(kv.layout, layer, indexer);
  return kv;
}

function mlaLayerCache(cache: KvCache, layer: number, mla: MlaParams): CudaKvCache {
  const kv = asCudaKvCache(cache);
  mlaKvLayer(kv.layout, layer, mla);
  return kv;
}

// The cache-write kernels index the rope table by rotary row, and the pool, unchecked.
function checkRopeAndSlots(batch: BatchDescription, table: CudaRopeTable, kv: CudaKvCache, op: string): void {
  const numSlots = kv.layout.numBlocks * kv.layout.blockSize;
  for (let t = 0; t < batch.numTokens; t++) {
    const row = batch.rotaryRows[t];
    if (row < 0 || row >= table.maxPositions) {
      throw new KeelError('context_overflow', `rotary row ${row} is outside the rotary table's ${table.maxPositions} rows`);
    }
  }
  // Every group's slots: the cache's pools hold every group's blocks.
  for (const slot of batch.slotMapping) if (slot < 0 || slot >= numSlots) throw new RangeError(`${op}: slot ${slot} is outside [0, ${numSlots})`);
}

/** The device slots of group `group`'s layers this step ([numKvGroups, numTokens] on the device). */
function groupSlots(s: CudaStepInputs, group: number): DevicePtr {
  return s.device.slotMapping + group * s.batch.numTokens * 4;
}

/** The device block tables of group `group`'s layers ([numKvGroups, numSeqs, maxBlocksPerSeq] on the device). */
function groupTables(s: CudaStepInputs, group: number): DevicePtr {
  return s.device.blockTables + group * s.batch.numSeqs * s.batch.maxBlocksPerSeq * 4;
}

/** The step's sequences in `layer`'s pool: the step's index arrays and its group's block tables. */
function pagedSequences(s: CudaStepInputs, kv: CudaKvCache, layer: number): PagedSequences {
  return {
    queryStartLoc: s.device.queryStartLoc,
    positions: s.device.positions,
    seqLens: s.device.seqLens,
    blockTables: groupTables(s, layerGroup(kv.layout, layer)),
    maxBlocksPerSeq: s.batch.maxBlocksPerSeq,
    blockSize: kv.layout.blockSize,
  };
}

// A replayed graph runs none of the ops' own checks: the step's rotary rows, slots and block ids are
// checked here against the smallest rope table and KV pool this backend made.
function checkReplayedStep(batch: BatchDescription, limits: { blocks: number; slots: number; rotaryRows: number }): void {
  for (let t = 0; t < batch.numTokens; t++) {
    if (batch.rotaryRows[t] < 0 || batch.rotaryRows[t] >= limits.rotaryRows) {
      throw new KeelError('context_overflow', `rotary row ${batch.rotaryRows[t]} is outside the rotary table's ${limits.rotaryRows} rows`);
    }
  }
  for (const slot of batch.slotMapping) if (slot < 0 || slot >= limits.slots) throw new RangeError(`replayForward: slot ${slot} is outside [0, ${limits.slots})`);
  for (let i = 0; i < batch.blockTables.length; i++) {
    const block = batch.blockTables[i];
    if (!(block >= 0 && block < limits.blocks)) throw new RangeError(`replayForward: block ${block} is outside [0, ${limits.blocks})`);
  }
}

// Ids past the table are legal (a vocab-parallel shard holds a range of rows; the kernel gives the
// others zero rows, as the CPU twin does); the engine checks ids against the whole vocabulary.
function checkTokens(batch: BatchDescription, sampledRows: number): void {
  assertTokenSources(batch, sampledRows);
  batch.tokenIds.forEach((id, t) => {
    if (batch.tokenSources[t] < 0 && !(id >= 0)) throw new KeelError('invalid_argument', `token id ${id} is negative`);
  });
}

// The kernels index the pools with these ids unchecked: an id past the pool is an illegal address
// that poisons the whole CUDA context, so they are checked once per step on the host.
function checkBlockTables(batch: BatchDescription, numBlocks: number, blockSize: number): void {
  for (let g = 0; g < batch.numKvGroups; g++) {
    const tables = groupBlockTables(batch, g);
    for (let s = 0; s < batch.numSeqs; s++) {
      const used = Math.ceil(batch.seqLens[s] / blockSize);
      if (used > batch.maxBlocksPerSeq) throw new RangeError(`sequence ${s}: ${batch.seqLens[s]} tokens need ${used} blocks, the table holds ${batch.maxBlocksPerSeq}`);
      for (let b = 0; b < used; b++) {
        const block = tables[s * batch.maxBlocksPerSeq + b];
        if (!(block >= 0 && block < numBlocks)) throw new RangeError(`sequence ${s}: group ${g}'s block ${block} is outside [0, ${numBlocks})`);
      }
    }
  }
}

function requireMultipleOf8(n: number, what: string): void {
  if (n % 8 !== 0) throw new KeelError('invalid_model', `the CUDA backend needs ${what} to be a multiple of 8, not ${n}`);
}

/** What the LLM.int8() kernels take: symmetric int8 codes, one scale per row, in order, 16-column chunks. */
function checkLlmInt8Weight(w: QuantizedWeight): void {
  if (w.format !== 'int8' || w.zeros !== null || w.perm !== null || w.groupSize !== w.cols) {
    throw new Error(`loadQuantizedWeight: LLM.int8() needs symmetric int8 codes with one scale per row and no act-order (got ${describeQuantized(w)})`);
  }
  if (w.cols % 16 !== 0) throw new Error(`loadQuantizedWeight: LLM.int8() on CUDA needs input features in multiples of 16 (got [${w.rows}, ${w.cols}])`);
}

/** Draft trees in a CUDA backend's tree buffer (its `serial`-th); `download` reads the table once queued work is done. */
class CudaDraftTrees implements DraftTrees {
  readonly table: DraftTreeTable;
  readonly serial: number;
  private readonly download: () => Int32Array;

  constructor(table: DraftTreeTable, serial: number, download: () => Int32Array) {
    this.table = table;
    this.serial = serial;
    this.download = download;
  }

  get numTrees(): number {
    return this.table.numTrees;
  }

  get size(): number {
    return this.table.size;
  }

  read(): DraftTreeNodes {
    const words = this.download();
    const n = this.table.numTrees * this.table.size;
    return { tokens: words.slice(0, n), parents: words.slice(n, 2 * n), logprobs: new Float32Array(words.buffer, words.byteOffset + 8 * n, n).slice() };
  }
}
