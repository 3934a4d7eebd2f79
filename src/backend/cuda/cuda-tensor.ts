import type { KvCache, LoraShape, LoraWeights, StepInputs, Tensor } from '../backend.ts';
import type { BatchDescription } from '../../step/batch.ts';
import { indexKeyElementsPerToken, indexKeyScalesPerToken, keySummaryElementsPerBlock, kvElementsPerToken, kvLayerDtype, kvScalesPerToken, kvStorage, kvValueBytes, layoutIndex, type KvCacheDtype, type KvCacheLayout } from '../../step/kv-cache-layout.ts';
import type { AttentionPlan } from './attention-plan.ts';
import type { DevicePtr } from './driver-api.ts';
import type { CusparseLtWeight } from './cusparselt.ts';
import type { MlaExpansionPlan } from './mla-expansion-plan.ts';
import type { QuantizedFormat } from '../../tensor/quantized-weight.ts';

/** Element type on the device: weights and activations are bf16, rope tables and readbacks f32. */
export type DeviceDType = 'bf16' | 'f32';

/** A row-major, contiguous device buffer. 1-D tensors (norm weights, biases) have one row. */
export class CudaTensor implements Tensor {
  readonly shape: readonly number[];
  readonly ptr: DevicePtr;
  readonly dtype: DeviceDType;

  constructor(shape: readonly number[], ptr: DevicePtr, dtype: DeviceDType) {
    this.shape = shape;
    this.ptr = ptr;
    this.dtype = dtype;
  }

  get rows(): number {
    return this.shape.length === 1 ? 1 : this.shape[0];
  }

  get cols(): number {
    return this.shape[this.shape.length - 1];
  }

  get numel(): number {
    return this.shape.reduce((n, d) => n * d, 1);
  }
}

/**
 * A 2:4 sparse linear weight [rows, cols] on the device: `dense`, its expansion in bf16 (what
 * decode-sized batches stream through the GEMV, and every batch multiplies when the shape is not
 * cuSPARSELt's), and `compressed`, cuSPARSELt's compressed copy, or null for such shapes.
 */
export class CudaSparse24Tensor implements Tensor {
  readonly shape: readonly number[];
  readonly dense: CudaTensor;
  readonly compressed: CusparseLtWeight | null;

  constructor(dense: CudaTensor, compressed: CusparseLtWeight | null) {
    this.shape = dense.shape;
    this.dense = dense;
    this.compressed = compressed;
  }
}

/**
 * A linear weight [rows, cols] in Keel's quantized layout (src/tensor/quantized-weight.ts) on the
 * device: `codes` [rows, rowBytes], `scales` f32 [rows, groups], `zeros` u8 [rows, groups] or 0
 * for symmetric codes, `mins` f32 [rows, groups] or 0 (int4 with mins), `perm` i32 [cols] or 0 (act-order: the input column of each stored one).
 * An LLM.int8() weight (`mixedInt8Threshold` set) holds signed int8 codes, as the int8 dot
 * products take them. An AQLM weight holds its code words as `codes`, its parts' codebooks as
 * float16 `codebooks` [parts, codebooks, size, 8] and `partEnds` (each part's end row); 0 and []
 * for other formats.
 */
export class CudaQuantizedTensor implements Tensor {
  readonly shape: readonly number[];
  readonly format: QuantizedFormat;
  readonly groupSize: number;
  readonly groups: number;
  readonly rowBytes: number;
  readonly codes: DevicePtr;
  readonly scales: DevicePtr;
  readonly zeros: DevicePtr;
  readonly mins: DevicePtr;
  readonly perm: DevicePtr;
  readonly mixedInt8Threshold: number | null;
  readonly codebooks: DevicePtr;
  readonly partEnds: readonly number[];
  /**
   * `rows`: Keel's layout, as above. `marlin`: codes, scales and zeros re-laid at load for the
   * fragment-layout GEMM (kernels/marlin-layout.cu); `perm` and `rowBytes` as in Keel's layout.
   */
  readonly layout: 'rows' | 'marlin';

  constructor(fields: Omit<CudaQuantizedTensor, 'rows' | 'cols'>) {
    this.shape = fields.shape;
    this.format = fields.format;
    this.groupSize = fields.groupSize;
    this.groups = fields.groups;
    this.rowBytes = fields.rowBytes;
    this.codes = fields.codes;
    this.scales = fields.scales;
    this.zeros = fields.zeros;
    this.mins = fields.mins;
    this.perm = fields.perm;
    this.mixedInt8Threshold = fields.mixedInt8Threshold;
    this.codebooks = fields.codebooks;
    this.partEnds = fields.partEnds;
    this.layout = fields.layout;
  }

  get rows(): number {
    return this.shape[0];
  }

  get cols(): number {
    return this.shape[1];
  }
}

/**
 * MoE experts [count, rows, cols] packed in MXFP4 (src/tensor/mxfp4.ts) on the device: `blocks`
 * [count, rows, cols / 2] bytes (two E2M1 codes each, the even column low), `scales` u8 E8M0
 * [count, rows, cols / 32].
 */
export class CudaMxfp4Tensor implements Tensor {
  readonly shape: readonly number[];
  readonly blocks: DevicePtr;
  readonly scales: DevicePtr;

  constructor(fields: CudaMxfp4Tensor) {
    ({ shape: this.shape, blocks: this.blocks, scales: this.scales } = fields);
  }
}

/**
 * Routed MoE experts [count, rows, cols] in int4, int8 or fp8 (`loadQuantizedExperts`): `stacked`
 * holds them as one quantized weight [count · rows, cols] in Keel's row layout, expert after expert.
 */
export class CudaQuantizedExperts implements Tensor {
  readonly shape: readonly number[];
  readonly stacked: CudaQuantizedTensor;

  constructor(stacked: CudaQuantizedTensor, count: number) {
    this.shape = [count, stacked.rows / count, stacked.cols];
    this.stacked = stacked;
  }
}

/** Rotary tables on the device: f32 cos then sin, each [maxPositions, rotaryDim / 2]. */
export class CudaRopeTable implements Tensor {
  readonly shape: readonly number[];
  readonly cos: DevicePtr;
  readonly sin: DevicePtr;
  readonly rotaryDim: number;

  constructor(maxPositions: number, rotaryDim: number, cos: DevicePtr, sin: DevicePtr) {
    this.shape = [2, maxPositions, rotaryDim / 2];
    this.rotaryDim = rotaryDim;
    this.cos = cos;
    this.sin = sin;
  }

  get maxPositions(): number {
    return this.shape[1];
  }
}

/**
 * Every storage's pools (`kvStorage`: a layer's own, or one shared with layers of other KV groups)
 * in one allocation, one after another: attention's key pool then its
 * value pool, each [numBlocks, blockSize, numKvHeads, headDim]; an MLA layer's one pool of rows
 * [numBlocks, blockSize, latentDim + ropeDim] (a sparse one's indexer keys [numBlocks, blockSize,
 * keyDim] after them); a rows layer's one pool [numBlocks, blockSize, width], always bf16. Keys,
 * values, MLA rows and indexer keys are bf16, or one byte a code in an 8-bit cache, where int8 adds
 * float32 scale pools after the layer's code pools: [numBlocks, blockSize, numKvHeads] for keys and
 * for values, or one per MLA row; 8-bit indexer keys have a scale pool of their own (either
 * 8-bit dtype: IndexKeysSpec). Every pool is indexed by block, so
 * whatever walks `pools` (copyBlocks, swaps) moves the scales with their codes; all but key
 * summaries by slot within it too (`perSlot`), which copySlots walks.
 */
export class CudaKvCache implements KvCache {
  readonly layout: KvCacheLayout;
  readonly dtype: KvCacheDtype;
  readonly base: DevicePtr;
  /** Each pool's byte offset from `base`, its bytes per block, and whether it holds a row per slot (key summaries hold one per block), in storage order. */
  readonly pools: { offset: number; blockBytes: number; perSlot: boolean }[];
  readonly totalBytes: number;
  /** Of each layer, the index in `pools` of its storage's first pool. */
  private readonly firstPool: number[];
  /** Of each layer with a per-sequence state (`SequenceStateSpec`), its slots' byte offset from `base` (after the pools); else -1. */
  private readonly stateOffsets: number[];

  constructor(layout: KvCacheLayout, base: DevicePtr) {
    this.layout = layout;
    this.dtype = layout.dtype ?? 'auto';
    this.base = base;
    this.pools = [];
    let offset = 0;
    const add = (blockBytes: number, perSlot = true) => {
      this.pools.push({ offset, blockBytes, perSlot });
      offset += layout.numBlocks * blockBytes;
    };
    const storage = kvStorage(layout.layers, layout.groups);
    const storageFirstPool: number[] = [];
    for (const spec of storage.pools) {
      storageFirstPool.push(this.pools.length);
      // A state layer keeps nothing per token: its slots follow the pools.
      if (spec.kind === 'state') continue;
      const codePools = spec.kind === 'attention' ? [kvElementsPerToken(spec) / 2, kvElementsPerToken(spec) / 2] : [kvElementsPerToken(spec)];
      // A head's rows stay bf16 whatever the cache's dtype (kvLayerDtype).
      const elementBytes = kvValueBytes(kvLayerDtype(spec, this.dtype), 2);
      for (const elements of codePools) add(layout.blockSize * elements * elementBytes);
      const indexKeyScales = indexKeyScalesPerToken(spec, this.dtype);
      const scales = kvScalesPerToken(spec, this.dtype) - indexKeyScales;
      for (const perPool of spec.kind === 'attention' ? [scales / 2, scales / 2] : [scales]) if (perPool > 0) add(layout.blockSize * perPool * 4);
      // Quest's key summaries, bf16 whatever the cache's dtype: a pool indexed by block alone.
      const summaries = keySummaryElementsPerBlock(spec);
      if (summaries > 0) add(summaries * 2, false);
      // DeepSeek-V3.2's indexer keys, in the rows' dtype, after the row's pools; an 8-bit key's scales after them.
      const indexKeys = indexKeyElementsPerToken(spec);
      if (indexKeys > 0) add(layout.blockSize * indexKeys * elementBytes);
      if (indexKeyScales > 0) add(layout.blockSize * indexKeyScales * 4);
    }
    // [stateSlots, conv + recurrent] float32 per state layer.
    this.stateOffsets = layout.layers.map((spec) => {
      if (spec.kind !== 'state') return -1;
      const at = offset;
      offset += (layout.stateSlots ?? 0) * (spec.convElements + spec.recurrentElements) * 4;
      return at;
    });
    this.totalBytes = offset;
    this.firstPool = storage.poolOf.map((pool) => storageFirstPool[pool]);
  }

  /** A state layer's slots [stateSlots, conv + recurrent] float32, and the values per slot. */
  stateSlots(layer: number, op: string): { ptr: DevicePtr; slotStride: number; convElements: number } {
    const index = layoutIndex(this.layout, layer);
    const spec = this.layout.layers[index];
    if (spec.kind !== 'state') throw new Error(`${op}: layer ${layer} keeps ${spec.kind} entries, not a per-sequence state`);
    return { ptr: this.base + this.stateOffsets[index], slotStride: spec.convElements + spec.recurrentElements, convElements: spec.convElements };
  }

  keys(layer: number): DevicePtr {
    return this.pool(layer, 0);
  }

  values(layer: number): DevicePtr {
    return this.pool(layer, 1);
  }

  /** The float32 scale pools of keys and values: int8 [slots, numKvHeads], int4 [slots, numKvHeads, 2] (scale, minimum); 0 for other dtypes. */
  keyScales(layer: number): DevicePtr {
    return this.headScales() ? this.pool(layer, 2) : 0;
  }

  valueScales(layer: number): DevicePtr {
    return this.headScales() ? this.pool(layer, 3) : 0;
  }

  /** The key summaries [numBlocks, numKvHeads, 2, headDim] bf16 of a layer that keeps them (after its code and scale pools). */
  keySummaries(layer: number): DevicePtr {
    return this.pool(layer, this.headScales() ? 4 : 2);
  }

  /** Whether an attention layer's keys and values keep scales per (slot, head) in pools of their own. */
  private headScales(): boolean {
    return this.dtype === 'int8' || this.dtype === 'int4';
  }

  /** The one pool of rows of an MLA layer or a rows layer. */
  rows(layer: number): DevicePtr {
    return this.pool(layer, 0);
  }

  /** int8: an MLA layer's scale per row [slots]; 0 for other dtypes. */
  rowScales(layer: number): DevicePtr {
    return this.dtype === 'int8' ? this.pool(layer, 1) : 0;
  }

  /** A sparse MLA layer's indexer keys [slots, keyDim], bf16 or 8-bit codes as its rows (after its row and row-scale pools). */
  indexKeys(layer: number): DevicePtr {
    return this.pool(layer, this.dtype === 'int8' ? 2 : 1);
  }

  /** An 8-bit cache: a sparse MLA layer's float32 scale per indexer key [slots] (after the keys); 0 for bf16. */
  indexKeyScales(layer: number): DevicePtr {
    return this.dtype === 'auto' ? 0 : this.pool(layer, this.dtype === 'int8' ? 3 : 2);
  }

  private pool(layer: number, index: number): DevicePtr {
    return this.base + this.pools[this.firstPool[layoutIndex(this.layout, layer)] + index].offset;
  }
}

/** Device copies of a step's index arrays (uploaded together in beginStep) and its attention split. */
export interface StepDeviceArrays {
  tokenIds: DevicePtr;
  tokenSources: DevicePtr;
  positions: DevicePtr;
  rotaryRows: DevicePtr;
  slotMapping: DevicePtr;
  queryStartLoc: DevicePtr;
  seqLens: DevicePtr;
  blockTables: DevicePtr;
  logitsIndices: DevicePtr;
  decodeSeqs: DevicePtr;
  decodeTokens: DevicePtr;
  prefillTiles: DevicePtr;
  /** AttentionPlan.wideTiles: the Hopper prefill kernel's 128-row tiles. */
  wideTiles: DevicePtr;
  /** AttentionPlan.sparse: the split of Quest's sparse layers. */
  sparseDecodeSeqs: DevicePtr;
  sparseDecodeTokens: DevicePtr;
  sparsePrefillTiles: DevicePtr;
  sparseWideTiles: DevicePtr;
  /** The adapted tokens by LoRA slot and their tiles (lora-tiles.ts); nothing when the step has no loraSlots. */
  loraOrder: DevicePtr;
  loraTiles: DevicePtr;
  /** BatchDescription.treeMask (one unread word without one). */
  treeMask: DevicePtr;
  /** BatchDescription.stateSlots (one unread word without them). */
  stateSlots: DevicePtr;
  /** The MLA expansion plan's scratch blocks and block tables, and its two tile lists (CudaStepInputs.mlaExpansion; one unread word each without one). */
  mlaScratchBlocks: DevicePtr;
  mlaScratchTables: DevicePtr;
  mlaWideTiles: DevicePtr;
  mlaAbsorbedTiles: DevicePtr;
}

export class CudaStepInputs implements StepInputs {
  readonly batch: BatchDescription;
  readonly device: StepDeviceArrays;
  readonly plan: AttentionPlan;
  /** The cache whose block ids this step's tables were checked against (checked once per step). */
  checkedCache: KvCache | null = null;

  /** Where MLA's expanded form lays out the chunks' contexts (kernels/mla-expansion.ts), or null where the step's chunks run absorbed. */
  readonly mlaExpansion: MlaExpansionPlan | null;

  constructor(batch: BatchDescription, device: StepDeviceArrays, plan: AttentionPlan, mlaExpansion: MlaExpansionPlan | null) {
    this.batch = batch;
    this.device = device;
    this.plan = plan;
    this.mlaExpansion = mlaExpansion;
  }
}

/**
 * One linear layer's LoRA weights on the device, bf16: a [slots, slices, rp, in], b [slots, out,
 * rp] (scale folded in), ranks [slots] int32, rp the max rank rounded up to 16 (kernels/lora.cu).
 */
export class CudaLoraWeights implements LoraWeights {
  readonly shape: LoraShape;
  readonly rp: number;
  readonly a: DevicePtr;
  readonly b: DevicePtr;
  readonly ranks: DevicePtr;
  /** The ranks as uploaded. */
  readonly hostRanks: Int32Array;

  constructor(shape: LoraShape, rp: number, a: DevicePtr, b: DevicePtr, ranks: DevicePtr) {
    this.shape = shape;
    this.rp = rp;
    this.a = a;
    this.b = b;
    this.ranks = ranks;
    this.hostRanks = new Int32Array(shape.slots);
  }


  get outFeatures(): number {
    return this.shape.sliceRows.reduce((a, b) => a + b, 0);
  }

  /** Bytes of one slot's A matrices. */
  get slotBytesA(): number {
    return this.shape.sliceRows.length * this.rp * this.shape.inFeatures * 2;
  }

  /** Bytes of one slot's B. */
  get slotBytesB(): number {
    return this.rp * this.outFeatures * 2;
  }
}
