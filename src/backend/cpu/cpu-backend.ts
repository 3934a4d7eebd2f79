import { assertDeltaRuleShapes, assertGroupWidth, assertSelectiveScanShapes, gateGroup, assertLoraOperands, assertLoraSlot, assertPackedQkvWidth, assertRoutingParams, assertSwapPairs, assertTokenSources, attentionKvLayer, checkDraftTreeChunks, checkCopyPairs, checkDraftTreeDepth, deltaRuleDecays, expertWidth, indexKeysKvLayer, mlaKvLayer, nextSlots, rowsKvLayer } from '../shape-checks.ts';
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
import { TimeMarkSerials } from '../time-mark-serials.ts';
import type { HostTensor } from '../../tensor/host-tensor.ts';
import type { Communicator } from '../../parallel/communicator.ts';
import { groupBatch, groupSlotMapping, type BatchDescription } from '../../step/batch.ts';
import { keySummaryElementsPerBlock, kvStorage, layerGroup, layoutIndex, type KvCacheLayout } from '../../step/kv-cache-layout.ts';
import { asCpuKvCache, asCpuRopeTable, asCpuSwapSpace, asCpuTensor, CpuKvCache, CpuMxfp4Tensor, CpuQuantizedExperts, CpuSwapSpace, CpuQuantizedTensor, CpuRopeTable, CpuSparse24Tensor, CpuTensor } from './cpu-tensor.ts';
import { sparse24Matmul } from './ops/sparse24-matmul.ts';
import type { Sparse24Weight } from '../../tensor/sparse24.ts';
import { asCpuWeightStream, CpuWeightStream } from './weight-stream.ts';
import { gatedActivation, xieluValue } from './ops/activation.ts';
import { DRAFT_HISTORY_COLUMNS, draftHistoryRows, type Draw, type DrawResults } from '../../sampling/draw.ts';
import { draftTreeSlots, expandDraftTrees, writeDraftTreeMask } from './ops/draft-trees.ts';
import { sampleDraws } from '../../sampling/draw-sampler.ts';
import { pagedAttention, type CpuAttentionParams } from './ops/attention.ts';
import { writeKeySummaries } from './ops/key-summaries.ts';
import { hostTensorToFloat32 } from '../../tensor/host-dtype.ts';
import { gatherRows } from './ops/gather-rows.ts';
import { matmulTransposed } from './ops/matmul.ts';
import { llmInt8Matmul } from './ops/llm-int8-matmul.ts';
import { quantizedMatmul } from './ops/quantized-matmul.ts';
import { checkQuantizedExperts, checkQuantizedTable, decodeRow, type QuantizedWeight } from '../../tensor/quantized-weight.ts';
import { checkMxfp4, type Mxfp4Weight } from '../../tensor/mxfp4.ts';
import { headwiseLinear, mlaAttention, mlaRopeAndCacheWrite } from './ops/mla.ts';
import { indexerRopeAndCacheWrite, indexerTopK } from './ops/lightning-indexer.ts';
import { addLoraRows, CpuLoraWeights } from './ops/lora.ts';
import { addGatedRows, CpuExpertRouting, expertMlpRows, routeTokens, type CpuExpertMatrix } from './ops/moe.ts';
import type { SelectionMarginSink } from './ops/selection-margin.ts';
import { composeMoe } from '../moe-composition.ts';
import { addRmsNorm, headRmsNorm, layerNorm, rmsNorm } from './ops/norm.ts';
import { causalConv1d, gatedDeltaRule, gatedRmsNorm } from './ops/gated-delta-net.ts';
import { selectiveScan } from './ops/selective-scan.ts';
import { poolArrays, type CpuKvPool, type KvPoolArray } from './ops/kv-codes.ts';
import { ropeAndCacheWrite, type LayerKvPools } from './ops/rope-cache-write.ts';

/**
 * The reference backend: every tensor is float32 in a Float32Array, every reduction accumulates in
 * float64. It is the oracle the CUDA backend is tested against and the path for machines without
 * a GPU. Step ops allocate fresh outputs (the garbage collector reclaims them), so a step tensor
 * stays valid after the next `beginStep` too.
 */
export class CpuBackend implements Backend {
  readonly name = 'cpu' as const;
  /** Float32 values in an `auto` cache; 8-bit caches keep their codes (and int8 scales) as they are. */
  readonly kvElementBytes = 4;
  /**
   * Where each token's closest discrete choice is reported (selection-margin.ts), or null: a
   * diagnostic for tests and scripts/compare-backends.ts, which ask how near another backend's
   * rounding came to choosing other experts or positions.
   */
  selectionMargins: SelectionMarginSink | null = null;
  /** The latest sampling pass's ids: where a step's tokenSources and the next pass's pending tokens point. */
  private lastSampled: Int32Array = new Int32Array(0);
  /** The latest sampling pass's results: expandDraftTrees reads its top candidates. */
  private lastPass: DrawResults | null = null;
  /** The draft history (Draw.draftHistoryRow): DRAFT_HISTORY_COLUMNS ids a row, grown to the rows draws name. */
  private draftHistory: Int32Array = new Int32Array(0);
  /** The groups of a parallel run (ranks in worker threads sharing memory); null on one device. */
  private readonly groups: CollectiveGroups<Float32Array> | null;
  private readonly markSerials = new TimeMarkSerials();

  constructor(groups: CollectiveGroups<Float32Array> | null = null) {
    this.groups = groups;
  }

  kvCacheBudgetBytes(limits: KvBudgetLimits): number {
    return limits.cpuKvCacheBytes;
  }

  /** FLOP/s of this backend's matrix multiply on a 64 × 1024 by 1024 × 1024 product, best of three. */
  measureMatmulFlops(): number {
    const [rows, inDim, outDim] = [64, 1024, 1024];
    const x = Float32Array.from({ length: rows * inDim }, (_, i) => Math.sin(i));
    const w = Float32Array.from({ length: outDim * inDim }, (_, i) => Math.cos(i));
    const out = new Float32Array(rows * outDim);
    let best = Infinity;
    for (let i = 0; i < 3; i++) {
      const began = performance.now();
      matmulTransposed(x, rows, inDim, w, outDim, null, out);
      best = Math.min(best, performance.now() - began);
    }
    return (2 * rows * inDim * outDim) / (best / 1000);
  }

  /** Decodes to a new Float32Array (float32 is the compute dtype here); `t.data` is not retained. */
  loadWeight(t: HostTensor, _options?: { float32?: boolean }): Tensor {
    return new CpuTensor([...t.shape], hostTensorToFloat32(t));
  }

  /** Keeps `w` by reference (codes, scales and all): do not mutate it afterwards. */
  loadQuantizedWeight(w: QuantizedWeight, options: { table?: boolean } = {}): Tensor {
    if (options.table) checkQuantizedTable(w);
    return new CpuQuantizedTensor(w);
  }

  /** Keeps `w.meta` by reference: do not mutate it afterwards. */
  loadSparseWeight(w: Sparse24Weight): Tensor {
    return new CpuSparse24Tensor(w.rows, w.cols, hostTensorToFloat32(w.values), w.meta);
  }

  /** Keeps `w` by reference: do not mutate it afterwards. */
  loadMxfp4Weight(w: Mxfp4Weight): Tensor {
    checkMxfp4(w, 'loadMxfp4Weight');
    return new CpuMxfp4Tensor(w);
  }

  /** Keeps `w` by reference: do not mutate it afterwards. */
  loadQuantizedExperts(w: QuantizedWeight, count: number): Tensor {
    checkQuantizedExperts(w, count, 'loadQuantizedExperts');
    return new CpuQuantizedExperts(w, count);
  }

  /** Keeps `table.cos` and `table.sin` by reference: do not mutate them afterwards. */
  uploadRopeTable(table: RopeTable): Tensor {
    const expected = table.maxPositions * (table.rotaryDim / 2);
    if (table.cos.length !== expected || table.sin.length !== expected) {
      throw new Error(`uploadRopeTable: cos/sin need ${expected} values for ${table.maxPositions} positions of rotary dim ${table.rotaryDim}`);
    }
    return new CpuRopeTable(table.rotaryDim, table.cos, table.sin);
  }

  createKvCache(layout: KvCacheLayout): KvCache {
    return new CpuKvCache(layout);
  }

  copyBlocks(cache: KvCache, src: Int32Array, dst: Int32Array): void {
    const kv = asCpuKvCache(cache);
    const { numBlocks } = kv.layout;
    checkCopyPairs('copyBlocks', 'block', src, dst, numBlocks);
    for (const pool of kv.pools.flat().flatMap(poolArrays)) copyRuns(pool, numBlocks, src, dst);
  }

  copyStateSlots(cache: KvCache, src: Int32Array, dst: Int32Array): void {
    const kv = asCpuKvCache(cache);
    const numSlots = kv.layout.stateSlots ?? 0;
    checkCopyPairs('copyStateSlots', 'state slot', src, dst, numSlots);
    for (const states of kv.states) if (states !== null) copyRuns(states, numSlots, src, dst);
  }

  createSwapSpace(layout: KvCacheLayout): SwapSpace {
    return new CpuSwapSpace(layout);
  }

  createWeightStream(): WeightStream {
    return new CpuWeightStream();
  }

  weightGroupUploader(stream: WeightStream, group: number): WeightUploaderOps {
    const weights = asCpuWeightStream(stream);
    const placed = (w: QuantizedWeight): QuantizedWeight => ({
      ...w,
      codes: weights.place(group, w.codes),
      scales: weights.place(group, w.scales),
      zeros: w.zeros && weights.place(group, w.zeros),
      mins: w.mins && weights.place(group, w.mins),
      perm: w.perm && weights.place(group, w.perm),
      codebooks: w.codebooks && { ...w.codebooks, values: weights.place(group, w.codebooks.values) },
    });
    return {
      loadWeight: (t, options) => {
        const loaded = asCpuTensor(this.loadWeight(t, options), 'weight');
        return new CpuTensor(loaded.shape, weights.place(group, loaded.data));
      },
      loadQuantizedWeight: (w, options) => this.loadQuantizedWeight(placed(w), options),
      loadQuantizedExperts: (w, count) => this.loadQuantizedExperts(placed(w), count),
      loadSparseWeight: (w) => {
        const loaded = this.loadSparseWeight(w) as CpuSparse24Tensor;
        return new CpuSparse24Tensor(w.rows, w.cols, weights.place(group, loaded.values), weights.place(group, loaded.meta));
      },
      loadMxfp4Weight: (w) => this.loadMxfp4Weight({ ...w, blocks: weights.place(group, w.blocks), scales: weights.place(group, w.scales) }),
      // Rotary tables are shared by every layer: they stay where they are.
      uploadRopeTable: (table) => this.uploadRopeTable(table),
    };
  }

  /** Copies at once: the CPU backend runs every op before returning. */
  fetchWeights(stream: WeightStream, group: number): void {
    asCpuWeightStream(stream).fetch(group);
  }

  /** Nothing to wait for: a fetch has copied when it returns. */
  awaitWeights(stream: WeightStream): void {
    asCpuWeightStream(stream);
  }

  /** Copies at once: the CPU backend runs every op before returning. */
  swapOut(cache: KvCache, swap: SwapSpace, src: Int32Array, dst: Int32Array): void {
    const kv = asCpuKvCache(cache);
    const host = asCpuSwapSpace(swap);
    assertSwapPairs(kv.layout, host.layout, src, dst, 'device');
    const arrays = kv.pools.flat().flatMap(poolArrays);
    for (let i = 0; i < src.length; i++) {
      host.blocks.set(dst[i], arrays.map((array) => array.slice(...blockRange(array, kv.layout.numBlocks, src[i]))));
    }
  }

  swapIn(cache: KvCache, swap: SwapSpace, src: Int32Array, dst: Int32Array): void {
    const kv = asCpuKvCache(cache);
    const host = asCpuSwapSpace(swap);
    assertSwapPairs(kv.layout, host.layout, src, dst, 'host');
    const arrays = kv.pools.flat().flatMap(poolArrays);
    for (let i = 0; i < src.length; i++) {
      const saved = host.blocks.get(src[i]);
      if (saved === undefined) throw new Error(`swapIn: host block ${src[i]} holds nothing copied out`);
      arrays.forEach((array, a) => array.set(saved[a], blockRange(array, kv.layout.numBlocks, dst[i])[0]));
    }
  }

  /** Swaps are done when they return. */
  awaitSwapIns(): void {}

  copySlots(cache: KvCache, src: Int32Array, dst: Int32Array): void {
    const kv = asCpuKvCache(cache);
    const numSlots = kv.layout.numBlocks * kv.layout.blockSize;
    checkCopyPairs('copySlots', 'slot', src, dst, numSlots);
    const { pools: storage } = kvStorage(kv.layout.layers, kv.layout.groups);
    kv.pools.forEach((pools, p) => {
      // Key summaries are per block: the destinations' blocks are recomputed from the moved keys.
      const summaries = keySummaryElementsPerBlock(storage[p]) > 0 ? pools[2] : null;
      for (const array of (summaries === null ? pools : pools.slice(0, 2)).flatMap(poolArrays)) {
        copyRuns(array, numSlots, src, dst);
      }
      if (summaries !== null) writeKeySummaries(pools[0], summaries.codes as Float32Array, dst, kv.layout.blockSize);
    });
  }

  writeCacheRows(cache: KvCache, layer: number, rows: Tensor, slots: Int32Array): void {
    const { pool, width } = rowsPool(cache, layer, slots, 'writeCacheRows');
    const t = asCpuTensor(rows, 'writeCacheRows rows');
    if (t.rows !== slots.length || t.cols !== width) throw new Error(`writeCacheRows: rows [${t.shape.join(', ')}] for ${slots.length} slots of width ${width}`);
    for (let i = 0; i < slots.length; i++) pool.set(t.data.subarray(i * width, (i + 1) * width), slots[i] * width);
  }

  writeStepCacheRows(cache: KvCache, layer: number, rows: Tensor, step: StepInputs): void {
    this.writeCacheRows(cache, layer, rows, groupSlotMapping(step.batch, layerGroup(asCpuKvCache(cache).layout, layer)));
  }

  writeNextCacheRows(cache: KvCache, layer: number, rows: Tensor, step: StepInputs): void {
    const { layout } = asCpuKvCache(cache);
    this.writeCacheRows(cache, layer, rows, nextSlots(step.batch, layerGroup(layout, layer), layout.blockSize, 'writeNextCacheRows'));
  }

  readCacheRows(cache: KvCache, layer: number, slots: Int32Array): Tensor {
    const { pool, width } = rowsPool(cache, layer, slots, 'readCacheRows');
    const out = CpuTensor.zeros([slots.length, width]);
    gatherRows(pool, width, slots, out.data);
    return out;
  }

  readStepCacheRows(cache: KvCache, layer: number, step: StepInputs): Tensor {
    return this.readCacheRows(cache, layer, groupSlotMapping(step.batch, layerGroup(asCpuKvCache(cache).layout, layer)));
  }

  /** The CPU reads the batch's host arrays directly: nothing to upload. */
  beginStep(batch: BatchDescription): StepInputs {
    return { batch };
  }

  embedding(table: Tensor, step: StepInputs, scale: number, firstRow: number): Tensor {
    const [rows, cols] = table.shape;
    const copyRow = tableRowReader(table);
    const { tokenIds, tokenSources } = step.batch;
    if (tokenSources.some((source) => source >= 0)) assertTokenSources(step.batch, this.lastSampled.length);
    const out = CpuTensor.zeros([tokenIds.length, cols]);
    tokenIds.forEach((id, i) => {
      const source = tokenSources[i];
      const token = source >= 0 ? this.lastSampled[source] : id;
      if (source < 0 && token < 0) throw new RangeError(`embedding: token id ${token} is negative`);
      const row = token - firstRow;
      if (token >= 0 && row >= 0 && row < rows) copyRow(row, out.data.subarray(i * cols, (i + 1) * cols));
    });
    if (scale !== 1) for (let i = 0; i < out.data.length; i++) out.data[i] *= scale;
    return out;
  }

  rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
    const input = asCpuTensor(x, 'rmsNorm input');
    const w = normWeight(weight, input.cols, 'rmsNorm');
    const out = CpuTensor.zeros(input.shape);
    rmsNorm(input.data, input.rows, input.cols, w, eps, out.data);
    return out;
  }

  addRmsNorm(x: Tensor, residual: Tensor, weight: Tensor, eps: number): Tensor {
    const input = asCpuTensor(x, 'addRmsNorm input');
    const res = asCpuTensor(residual, 'addRmsNorm residual');
    if (input.data.length !== res.data.length || input.cols !== res.cols) {
      throw new Error(`addRmsNorm: input [${input.shape.join(', ')}] does not match residual [${res.shape.join(', ')}]`);
    }
    const w = normWeight(weight, res.cols, 'addRmsNorm');
    const out = CpuTensor.zeros(res.shape);
    addRmsNorm(input.data, res.data, res.rows, res.cols, w, eps, out.data);
    return out;
  }

  layerNorm(x: Tensor, weight: Tensor, bias: Tensor | null, eps: number, width: number): Tensor {
    const input = asCpuTensor(x, 'layerNorm input');
    assertGroupWidth(input.cols, width);
    const w = normWeight(weight, input.cols, 'layerNorm');
    const b = bias === null ? null : normWeight(bias, input.cols, 'layerNorm bias');
    const out = CpuTensor.zeros(input.shape);
    layerNorm(input.data, input.rows, input.cols, width, w, b, eps, out.data);
    return out;
  }

  /** Every CPU tensor is float32, so `float32` changes nothing here. */
  linear(x: Tensor, weight: Tensor, bias: Tensor | null, _options?: { float32?: boolean }): Tensor {
    const input = asCpuTensor(x, 'linear input');
    const [outDim, inDim] = weight.shape;
    if (input.cols !== inDim) throw new Error(`linear: input [${input.shape.join(', ')}] does not fit weight [${weight.shape.join(', ')}]`);
    const b = bias === null ? null : asCpuTensor(bias, 'linear bias').data;
    if (b !== null && b.length !== outDim) throw new Error(`linear: bias of ${b.length} values for ${outDim} outputs`);
    const out = CpuTensor.zeros([input.rows, outDim]);
    if (weight instanceof CpuQuantizedTensor && weight.weight.mixedInt8 !== null) llmInt8Matmul(input.data, input.rows, weight.weight, b, out.data);
    else if (weight instanceof CpuQuantizedTensor) quantizedMatmul(input.data, input.rows, weight.weight, b, out.data);
    else if (weight instanceof CpuSparse24Tensor) sparse24Matmul(input.data, input.rows, inDim, weight.values, weight.meta, outDim, b, out.data);
    else matmulTransposed(input.data, input.rows, inDim, asCpuTensor(weight, 'linear weight').data, outDim, b, out.data);
    return out;
  }

  ropeAndCacheWrite(qkv: Tensor, rope: Tensor, cache: KvCache, layer: number, step: StepInputs, attn: AttentionParams, norm: HeadNorm | null = null): void {
    const packed = asPackedQkv(qkv, attn);
    const table = asCpuRopeTable(rope);
    if (table.rotaryDim > attn.headDim) throw new Error(`ropeAndCacheWrite: rotary dim ${table.rotaryDim} exceeds head dim ${attn.headDim}`);
    const pools = layerPools(cache, layer, attn);
    const { rotaryRows, slotMapping, numTokens } = groupBatch(step.batch, layerGroup(cache.layout, layer));
    if (packed.rows !== numTokens) throw new Error(`ropeAndCacheWrite: qkv has ${packed.rows} rows for ${numTokens} tokens`);
    if (norm !== null) {
      const { numHeads, numKvHeads, headDim } = attn;
      const heads = (first: number, count: number, weight: Tensor) =>
        headRmsNorm(packed.data, packed.rows, packed.cols, first, count, headDim, normWeight(weight, headDim, 'ropeAndCacheWrite norm'), norm.eps);
      heads(0, numHeads, norm.q);
      heads(numHeads, numKvHeads, norm.k);
      if (norm.v !== null) heads(numHeads + numKvHeads, numKvHeads, norm.v);
    }
    ropeAndCacheWrite(packed.data, rotaryRows, slotMapping, table, pools, attn, attn.streaming !== null);
    if (pools.summaries) writeKeySummaries(pools.keys, pools.summaries, slotMapping, cache.layout.blockSize);
  }

  attention(qkv: Tensor, cache: KvCache, layer: number, step: StepInputs, attn: AttentionParams): Tensor {
    const packed = asPackedQkv(qkv, attn);
    const pools = layerPools(cache, layer, attn);
    const out = CpuTensor.zeros([packed.rows, attn.numHeads * attn.headDim]);
    const sinks = attn.sinks === null ? null : asCpuTensor(attn.sinks, 'attention sinks').data;
    if (sinks !== null && sinks.length !== attn.numHeads) throw new Error(`attention: ${sinks.length} sinks for ${attn.numHeads} heads`);
    const streaming = attn.streaming === null ? null : { ...attn.streaming, rope: asCpuRopeTable(attn.streaming.rope) };
    const params: CpuAttentionParams = { ...attn, sinks, streaming };
    pagedAttention(packed.data, pools, cache.layout.blockSize, groupBatch(step.batch, layerGroup(cache.layout, layer)), params, out.data);
    return out;
  }

  gatedLinear(x: Tensor, gateUp: Tensor, activation: Activation): Tensor {
    return this.gatedActivation(this.linear(x, gateUp, null), activation);
  }

  gatedActivation(x: Tensor, activation: Activation): Tensor {
    const input = asCpuTensor(x, 'gatedActivation input');
    if (input.cols % 2 !== 0) throw new Error(`gatedActivation: ${input.cols} columns do not split into gate and up halves`);
    const n = input.cols / 2;
    const out = CpuTensor.zeros([input.rows, n]);
    gatedActivation(activation, input.data, input.rows, n, out.data);
    return out;
  }

  createLoraWeights(shape: LoraShape): LoraWeights {
    return new CpuLoraWeights(shape);
  }

  setLoraSlot(weights: LoraWeights, slot: number, rank: number, slices: readonly (LoraSliceValues | null)[]): void {
    const w = asCpuLora(weights);
    const { maxRank: R, inFeatures: inDim, sliceRows } = w.shape;
    assertLoraSlot(w.shape, slot, rank, slices);
    const S = sliceRows.length;
    const outDim = sliceRows.reduce((a, b) => a + b, 0);
    w.a.fill(0, slot * S * R * inDim, (slot + 1) * S * R * inDim);
    w.b.fill(0, slot * outDim * R, (slot + 1) * outDim * R);
    let first = 0;
    slices.forEach((slice, s) => {
      if (slice !== null) {
        w.a.set(slice.a, (slot * S + s) * R * inDim);
        for (let o = 0; o < sliceRows[s]; o++) w.b.set(slice.b.subarray(o * rank, (o + 1) * rank), (slot * outDim + first + o) * R);
      }
      first += sliceRows[s];
    });
    w.ranks[slot] = rank;
  }

  addLora(out: Tensor, x: Tensor, weights: LoraWeights, step: StepInputs): void {
    const w = asCpuLora(weights);
    const input = asCpuTensor(x, 'addLora input');
    const target = asCpuTensor(out, 'addLora output');
    assertLoraOperands(w.shape, input.shape, target.shape, step.batch);
    if (step.batch.loraSlots === null) return;
    addLoraRows(target.data, input.data, input.rows, w, step.batch.loraSlots);
  }

  softcap(x: Tensor, cap: number): void {
    const data = asCpuTensor(x, 'softcap input').data;
    for (let i = 0; i < data.length; i++) data[i] = cap * Math.tanh(data[i] / cap);
  }

  scale(x: Tensor, factor: number): void {
    const data = asCpuTensor(x, 'scale input').data;
    const f = Math.fround(factor);
    for (let i = 0; i < data.length; i++) data[i] *= f;
  }

  silu(x: Tensor): void {
    const data = asCpuTensor(x, 'silu input').data;
    for (let i = 0; i < data.length; i++) data[i] = data[i] / (1 + Math.exp(-data[i]));
  }

  xielu(x: Tensor, params: XieluParams): void {
    const data = asCpuTensor(x, 'xielu input').data;
    for (let i = 0; i < data.length; i++) data[i] = xieluValue(data[i], params);
  }

  headwiseLinear(x: Tensor, weight: Tensor): Tensor {
    const input = asCpuTensor(x, 'headwiseLinear input');
    const w = asCpuTensor(weight, 'headwiseLinear weight');
    const [heads, outDim, inDim] = w.shape;
    if (w.shape.length !== 3 || input.cols % heads !== 0 || input.cols / heads < inDim) {
      throw new Error(`headwiseLinear: input [${input.shape.join(', ')}] does not fit per-head weights [${w.shape.join(', ')}]`);
    }
    const out = CpuTensor.zeros([input.rows, heads * outDim]);
    headwiseLinear(input.data, input.rows, heads, input.cols / heads, w.data, outDim, inDim, out.data);
    return out;
  }

  mlaRopeAndCacheWrite(q: Tensor, kv: Tensor, latentNorm: Tensor, eps: number, rope: Tensor, cache: KvCache, layer: number, step: StepInputs, mla: MlaParams): void {
    const { numTokens, rotaryRows, positions, slotMapping } = groupBatch(step.batch, layerGroup(cache.layout, layer));
    const queries = mlaQueries(q, mla, numTokens);
    const rows = asCpuTensor(kv, 'mlaRopeAndCacheWrite kv');
    if (rows.rows !== numTokens || rows.cols !== mla.latentDim + mla.ropeDim) {
      throw new Error(`mlaRopeAndCacheWrite: kv [${rows.shape.join(', ')}] is not [${numTokens}, ${mla.latentDim} + ${mla.ropeDim}]`);
    }
    const norm = normWeight(latentNorm, mla.latentDim, 'mlaRopeAndCacheWrite');
    mlaRopeAndCacheWrite(queries.data, rows.data, rotaryRows, positions, slotMapping, norm, eps, asCpuRopeTable(rope), mlaPool(cache, layer, mla), mla);
  }

  mlaAttention(qLatent: Tensor, q: Tensor, cache: KvCache, layer: number, step: StepInputs, mla: MlaParams, selection: TokenSelection | null = null): Tensor {
    if (step.batch.treeMask !== null) throw new Error('mlaAttention: MLA takes no tree mask (draft trees are verified on attention layers only)');
    const { numTokens } = step.batch;
    const queries = mlaQueries(q, mla, numTokens);
    const latent = asCpuTensor(qLatent, 'mlaAttention qLatent');
    if (latent.rows !== numTokens || latent.cols !== mla.numHeads * mla.latentDim) {
      throw new Error(`mlaAttention: qLatent [${latent.shape.join(', ')}] is not [${numTokens}, ${mla.numHeads} × ${mla.latentDim}]`);
    }
    const selected = selection === null ? null : asCpuTokenSelection(selection, numTokens);
    const out = CpuTensor.zeros([numTokens, mla.numHeads * mla.latentDim]);
    mlaAttention(latent.data, queries.data, mlaPool(cache, layer, mla), cache.layout.blockSize, groupBatch(step.batch, layerGroup(cache.layout, layer)), mla, out.data, selected);
    return out;
  }

  /** The definition, in the absorbed form. */
  mlaAttentionHeads(q: Tensor, cache: KvCache, layer: number, step: StepInputs, mla: MlaParams, up: MlaUpProjections, selection: TokenSelection | null = null): Tensor {
    const latent = this.mlaAttention(this.headwiseLinear(q, up.keyAbsorption), q, cache, layer, step, mla, selection);
    return this.headwiseLinear(latent, up.valueAbsorption);
  }

  indexerRopeAndCacheWrite(q: Tensor, k: Tensor, keyNorm: Tensor, keyNormBias: Tensor, eps: number, rope: Tensor, cache: KvCache, layer: number, step: StepInputs, indexer: IndexerParams): void {
    const { numTokens, rotaryRows, slotMapping } = groupBatch(step.batch, layerGroup(cache.layout, layer));
    const queries = indexerQueries(q, indexer, numTokens, 'indexerRopeAndCacheWrite');
    const keys = asCpuTensor(k, 'indexerRopeAndCacheWrite k');
    if (keys.rows !== numTokens || keys.cols !== indexer.headDim) throw new Error(`indexerRopeAndCacheWrite: k [${keys.shape.join(', ')}] is not [${numTokens}, ${indexer.headDim}]`);
    const weight = normWeight(keyNorm, indexer.headDim, 'indexerRopeAndCacheWrite');
    const bias = normWeight(keyNormBias, indexer.headDim, 'indexerRopeAndCacheWrite bias');
    indexerRopeAndCacheWrite(queries.data, keys.data, rotaryRows, slotMapping, weight, bias, eps, asCpuRopeTable(rope), indexKeyPool(cache, layer, indexer), indexer);
  }

  indexerTopK(q: Tensor, weights: Tensor, cache: KvCache, layer: number, step: StepInputs, indexer: IndexerParams): TokenSelection {
    if (step.batch.treeMask !== null) throw new Error('indexerTopK: the indexer takes no tree mask (draft trees are verified on attention layers only)');
    const { numTokens } = step.batch;
    const queries = indexerQueries(q, indexer, numTokens, 'indexerTopK');
    const w = asCpuTensor(weights, 'indexerTopK weights');
    if (w.rows !== numTokens || w.cols !== indexer.numHeads) throw new Error(`indexerTopK: weights [${w.shape.join(', ')}] are not [${numTokens}, ${indexer.numHeads}]`);
    const positions = new Int32Array(numTokens * indexer.topK);
    const sink = this.selectionMargins;
    const onMargin = sink === null ? undefined : (t: number, margin: number) => sink('index selection', t, margin);
    indexerTopK(queries.data, w.data, indexKeyPool(cache, layer, indexer), cache.layout.blockSize, groupBatch(step.batch, layerGroup(cache.layout, layer)), indexer, positions, onMargin);
    return new CpuTokenSelection(numTokens, indexer.topK, positions);
  }

  addInto(target: Tensor, x: Tensor, gate: Tensor | null): void {
    const t = asCpuTensor(target, 'addInto target');
    const input = asCpuTensor(x, 'addInto input');
    if (input.data.length !== t.data.length || input.cols !== t.cols) {
      throw new Error(`addInto: input [${input.shape.join(', ')}] does not match target [${t.shape.join(', ')}]`);
    }
    const g = gate === null ? null : asCpuTensor(gate, 'addInto gate').data;
    if (g !== null && g.length !== t.rows) throw new Error(`addInto: gate of ${g.length} values for ${t.rows} rows`);
    addGatedRows(t.data, input.data, g, t.rows, t.cols);
  }

  allReduce(x: Tensor): Tensor {
    const t = asCpuTensor(x, 'allReduce input');
    this.groups?.tensor.allReduceSum(t.data, t.data.length);
    return t;
  }

  allGatherColumns(x: Tensor): Tensor {
    const t = asCpuTensor(x, 'allGatherColumns input');
    const size = this.groups?.tensor.size ?? 1;
    if (size === 1) return t;
    const gathered = new Float32Array(size * t.data.length);
    this.groups!.tensor.allGather(t.data, gathered, t.data.length);
    const out = CpuTensor.zeros([t.rows, size * t.cols]);
    for (let r = 0; r < size; r++) {
      for (let row = 0; row < t.rows; row++) {
        const from = (r * t.rows + row) * t.cols;
        out.data.set(gathered.subarray(from, from + t.cols), (row * size + r) * t.cols);
      }
    }
    return out;
  }

  sendToStage(x: Tensor, stage: number): void {
    const t = asCpuTensor(x, 'sendToStage input');
    this.pipeline('sendToStage').send(t.data, t.data.length, stage);
  }

  receiveFromStage(shape: readonly number[], stage: number): Tensor {
    const out = CpuTensor.zeros(shape);
    this.pipeline('receiveFromStage').recv(out.data, out.data.length, stage);
    return out;
  }

  /** Positions travel as float32 values, exact below 2^24 (every context Keel serves). */
  sendSelectionToStage(selection: TokenSelection, stage: number): void {
    const positions = asCpuTokenSelection(selection, selection.numTokens);
    this.pipeline('sendSelectionToStage').send(Float32Array.from(positions), positions.length, stage);
  }

  receiveSelectionFromStage(numTokens: number, topK: number, stage: number): TokenSelection {
    const values = new Float32Array(numTokens * topK);
    this.pipeline('receiveSelectionFromStage').recv(values, values.length, stage);
    return new CpuTokenSelection(numTokens, topK, Int32Array.from(values));
  }

  private pipeline(op: string): Communicator<Float32Array> {
    if (this.groups === null) throw new Error(`${op}: this backend runs no pipeline stages`);
    return this.groups.pipeline;
  }

  routeExperts(logits: Tensor, params: RoutingParams): ExpertRouting {
    const l = asCpuTensor(logits, 'routeExperts logits');
    const numExperts = l.cols;
    assertRoutingParams(params, numExperts);
    const bias = params.selectionBias === null ? null : asCpuTensor(params.selectionBias, 'routing selection bias').data;
    if (bias !== null && bias.length !== numExperts) throw new Error(`routeExperts: selection bias of ${bias.length} values for ${numExperts} experts`);
    const sink = this.selectionMargins;
    const routes = routeTokens(l.data, l.rows, numExperts, { ...params, selectionBias: bias }, sink === null ? undefined : (t, margin) => sink('expert routing', t, margin));
    return new CpuExpertRouting(l.rows, params.topK, numExperts, routes);
  }

  expertMlp(x: Tensor, routing: ExpertRouting, experts: ExpertWeights, activation: Activation): Tensor {
    const input = asCpuTensor(x, 'expertMlp input');
    if (!(routing instanceof CpuExpertRouting)) throw new Error('CpuBackend: routing is not from routeExperts');
    if (routing.numTokens !== input.rows) throw new Error(`expertMlp: routing of ${routing.numTokens} tokens for ${input.rows} rows`);
    const hidden = input.cols;
    const n = expertWidth(experts, hidden, routing.numExperts);
    const data = (t: Tensor | null, what: string) => (t === null ? null : asCpuTensor(t, what).data);
    const out = CpuTensor.zeros([input.rows, hidden]);
    const weights = {
      first: experts.first,
      count: experts.count,
      n,
      hidden,
      gateUp: expertMatrix(experts.gateUp, 'expert gate/up weights'),
      down: expertMatrix(experts.down, 'expert down weights'),
      gateUpBias: data(experts.gateUpBias, 'expert gate/up bias'),
      downBias: data(experts.downBias, 'expert down bias'),
    };
    expertMlpRows(input.data, input.rows, routing.routes, routing.topK, weights, activation, out.data);
    return out;
  }

  moe(x: Tensor, weights: MoeWeights): Tensor {
    return composeMoe(this, x, weights);
  }

  concatColumns(parts: readonly Tensor[]): Tensor {
    const tensors = parts.map((p) => asCpuTensor(p, 'concatColumns part'));
    const rows = tensors[0]?.rows ?? 0;
    if (tensors.some((t) => t.rows !== rows)) throw new Error(`concatColumns: parts of ${tensors.map((t) => t.rows).join(', ')} rows`);
    const cols = tensors.reduce((n, t) => n + t.cols, 0);
    const out = CpuTensor.zeros([rows, cols]);
    for (let r = 0; r < rows; r++) {
      let at = r * cols;
      for (const t of tensors) {
        out.data.set(t.data.subarray(r * t.cols, (r + 1) * t.cols), at);
        at += t.cols;
      }
    }
    return out;
  }

  causalConv1d(x: Tensor, weight: Tensor, bias: Tensor | null, cache: KvCache, layer: number, step: StepInputs): Tensor {
    const input = asCpuTensor(x, 'causalConv1d input');
    const w = asCpuTensor(weight, 'causalConv1d weight');
    const [channels, kernel] = w.shape;
    if (input.cols !== channels || input.rows !== step.batch.numTokens) throw new Error(`causalConv1d: input [${input.shape.join(', ')}] does not fit weight [${w.shape.join(', ')}] and ${step.batch.numTokens} tokens`);
    const b = bias === null ? null : normWeight(bias, channels, 'causalConv1d bias');
    const out = CpuTensor.zeros(input.shape);
    causalConv1d(input.data, channels, w.data, b, kernel, step.batch, asCpuKvCache(cache).layerState(layer, 'causalConv1d'), out.data);
    return out;
  }

  selectiveScan(xbc: Tensor, dt: Tensor, z: Tensor, aLog: Tensor, dtBias: Tensor, d: Tensor, cache: KvCache, layer: number, step: StepInputs, params: SelectiveScanParams): Tensor {
    const [x, steps, gate] = [asCpuTensor(xbc, 'selectiveScan xbc'), asCpuTensor(dt, 'selectiveScan dt'), asCpuTensor(z, 'selectiveScan z')];
    const n = step.batch.numTokens;
    assertSelectiveScanShapes({ xbc: x.shape, dt: steps.shape, z: gate.shape }, n, params);
    const perHead = (t: Tensor, what: string) => normWeight(t, params.numHeads, `selectiveScan ${what}`);
    const out = CpuTensor.zeros([n, params.numHeads * params.headDim]);
    selectiveScan(x.data, steps.data, gate.data, perHead(aLog, 'aLog'), perHead(dtBias, 'dtBias'), perHead(d, 'd'), step.batch, asCpuKvCache(cache).layerState(layer, 'selectiveScan'), params, out.data);
    return out;
  }

  gatedDeltaRule(qkv: Tensor, ba: Tensor, aLog: Tensor, dtBias: Tensor, cache: KvCache, layer: number, step: StepInputs, params: DeltaRuleParams): Tensor {
    const packed = asCpuTensor(qkv, 'gatedDeltaRule qkv');
    const gates = asCpuTensor(ba, 'gatedDeltaRule ba');
    const n = step.batch.numTokens;
    assertDeltaRuleShapes(packed.shape, gates.shape, n, params);
    const out = CpuTensor.zeros([n, params.numValueHeads * params.valueDim]);
    const a = normWeight(aLog, params.numValueHeads, 'gatedDeltaRule aLog');
    const bias = normWeight(dtBias, deltaRuleDecays(params), 'gatedDeltaRule dtBias');
    gatedDeltaRule(packed.data, gates.data, a, bias, step.batch, asCpuKvCache(cache).layerState(layer, 'gatedDeltaRule'), params, out.data);
    return out;
  }

  multiplyGate(x: Tensor, gate: Tensor, fn: GateFunction): Tensor {
    const input = asCpuTensor(x, 'multiplyGate input');
    const g = asCpuTensor(gate, 'multiplyGate gate');
    const group = gateGroup(input.shape, g.shape);
    const gateOf = fn === 'sigmoid' ? (v: number) => 1 / (1 + Math.exp(-v)) : (v: number) => (v > 20 ? v : Math.log1p(Math.exp(v)));
    const { cols } = input;
    return new CpuTensor(input.shape, input.data.map((v, i) => v * Math.fround(gateOf(g.data[Math.floor(i / cols) * g.cols + Math.floor((i % cols) / group)]))));
  }

  gatedRmsNorm(x: Tensor, gate: Tensor, weight: Tensor, eps: number, activation: NormGate): Tensor {
    const input = asCpuTensor(x, 'gatedRmsNorm input');
    const z = asCpuTensor(gate, 'gatedRmsNorm gate');
    const w = asCpuTensor(weight, 'gatedRmsNorm weight').data;
    if (z.rows !== input.rows || z.cols !== input.cols || input.cols % w.length !== 0) {
      throw new Error(`gatedRmsNorm: input [${input.shape.join(', ')}], gate [${z.shape.join(', ')}] and a weight of ${w.length} values do not fit`);
    }
    const out = CpuTensor.zeros(input.shape);
    gatedRmsNorm(input.data, z.data, w, eps, activation, out.data);
    return out;
  }

  gatherLogitsRows(x: Tensor, step: StepInputs): Tensor {
    return gatherTensorRows(asCpuTensor(x, 'gatherLogitsRows input'), step.batch.logitsIndices);
  }

  gatherRows(x: Tensor, rows: Int32Array): Tensor {
    return gatherTensorRows(asCpuTensor(x, 'gatherRows input'), rows);
  }

  /** A copy: later in-place ops on `x` (addRmsNorm's residual) do not show through. */
  toHost(x: Tensor): Float32Array {
    return asCpuTensor(x, 'toHost input').data.slice();
  }

  sampleRows(x: Tensor, draws: readonly Draw[]): SampledTokens {
    const t = asCpuTensor(x, 'sampleRows input');
    const rows = draftHistoryRows(draws);
    if (this.draftHistory.length < rows * DRAFT_HISTORY_COLUMNS) {
      const grown = new Int32Array(rows * DRAFT_HISTORY_COLUMNS);
      grown.set(this.draftHistory);
      this.draftHistory = grown;
    }
    const results = sampleDraws(t.data, t.rows, t.cols, draws, this.lastSampled, this.draftHistory);
    this.lastSampled = results.tokenIds;
    this.lastPass = results;
    return { read: () => results };
  }

  mapSampledIds(map: Int32Array): void {
    // A new array: the pass's results, which the host reads, keep the ids it drew.
    this.lastSampled = Int32Array.from(this.lastSampled, (id) => (id < 0 ? id : id < map.length ? map[id] : -1));
  }

  beginDraftTrees(numTrees: number, size: number): DraftTrees {
    return new CpuDraftTrees(numTrees, size);
  }

  expandDraftTrees(trees: DraftTrees, depth: DraftTreeDepth, map: Int32Array | null): void {
    const t = asCpuDraftTrees(trees);
    if (this.lastPass === null) throw new Error('expandDraftTrees: no sampling pass holds the candidates');
    checkDraftTreeDepth(t, depth, this.lastPass.tokenIds.length);
    expandDraftTrees(t.nodes, t.size, depth, this.lastPass, map);
    // A new array: the pass's results, which the host may read, keep the ids it drew.
    this.lastSampled = t.nodes.tokens.slice();
  }

  writeDraftTreeMask(trees: DraftTrees, step: StepInputs, chunkTrees: Int32Array): void {
    const t = asCpuDraftTrees(trees);
    if (step.batch.treeMask === null) throw new Error('writeDraftTreeMask: the step has no tree mask');
    checkDraftTreeChunks(t, step.batch, chunkTrees, 'writeDraftTreeMask');
    writeDraftTreeMask(step.batch, t.nodes.parents, t.size, chunkTrees);
  }

  readDraftTreeCacheRows(cache: KvCache, layer: number, trees: DraftTrees, step: StepInputs, chunkTrees: Int32Array, slots: Int32Array): Tensor {
    const t = asCpuDraftTrees(trees);
    checkDraftTreeChunks(t, step.batch, chunkTrees, 'readDraftTreeCacheRows');
    if (slots.length !== step.batch.numTokens + step.batch.numSeqs) throw new RangeError(`readDraftTreeCacheRows: ${slots.length} slots for ${step.batch.numTokens} tokens in ${step.batch.numSeqs} chunks`);
    return this.readCacheRows(cache, layer, draftTreeSlots(step.batch, t.nodes.parents, t.size, chunkTrees, slots));
  }

  /** The host clock: every op has run by the time it returns. */
  markTime(): TimeMark {
    const mark: CpuTimeMark = { backend: 'cpu', serial: this.markSerials.next(), ms: performance.now() };
    return mark;
  }

  elapsedMs(start: TimeMark, end: TimeMark): number {
    const [a, b] = [asCpuTimeMark(start), asCpuTimeMark(end)];
    this.markSerials.check(a.serial);
    this.markSerials.check(b.serial);
    return b.ms - a.ms;
  }

  readonly recordsGraphs = false;

  replayForward<T>(_step: StepInputs, _owner: object, forward: () => T): T {
    return forward();
  }

  /** Everything lives in garbage-collected arrays: nothing to release. */
  dispose(): void {}
}

interface CpuTimeMark extends TimeMark {
  serial: number;
  ms: number;
}

function asCpuTimeMark(mark: TimeMark): CpuTimeMark {
  if (mark.backend !== 'cpu') throw new Error(`a ${mark.backend} time mark was given to the CPU backend`);
  return mark as CpuTimeMark;
}

/** An expert matrix's values: float32, or packed MXFP4 or int4/int8/fp8 that expertMlpRows decodes an expert at a time. */
function expertMatrix(t: Tensor, what: string): CpuExpertMatrix {
  if (t instanceof CpuMxfp4Tensor || t instanceof CpuQuantizedExperts) return t.weight;
  return asCpuTensor(t, what).data;
}

function asCpuLora(w: LoraWeights): CpuLoraWeights {
  if (!(w instanceof CpuLoraWeights)) throw new Error('CpuBackend: LoRA weights are not from createLoraWeights');
  return w;
}

function gatherTensorRows(table: CpuTensor, indices: Int32Array): CpuTensor {
  const out = CpuTensor.zeros([indices.length, table.cols]);
  gatherRows(table.data, table.cols, indices, out.data);
  return out;
}

function normWeight(weight: Tensor, width: number, op: string): Float32Array {
  const w = asCpuTensor(weight, `${op} weight`).data;
  if (w.length !== width) throw new Error(`${op}: weight of ${w.length} values for rows of ${width}`);
  return w;
}

function asPackedQkv(qkv: Tensor, attn: AttentionParams): CpuTensor {
  const packed = asCpuTensor(qkv, 'qkv');
  assertPackedQkvWidth(packed.cols, attn);
  return packed;
}

/** [start, end) of block `block` in a pool of `numBlocks` equal blocks. */
function blockRange(array: KvPoolArray, numBlocks: number, block: number): [number, number] {
  const width = array.length / numBlocks;
  return [block * width, (block + 1) * width];
}

function mlaQueries(q: Tensor, mla: MlaParams, numTokens: number): CpuTensor {
  const t = asCpuTensor(q, 'MLA queries');
  if (t.rows !== numTokens || t.cols !== mla.numHeads * (mla.nopeDim + mla.ropeDim)) {
    throw new Error(`MLA queries [${t.shape.join(', ')}] are not [${numTokens}, ${mla.numHeads} × (${mla.nopeDim} + ${mla.ropeDim})]`);
  }
  return t;
}

function mlaPool(cache: KvCache, layer: number, mla: MlaParams): CpuKvPool {
  const kv = asCpuKvCache(cache);
  mlaKvLayer(kv.layout, layer, mla);
  return kv.layerPools(layer)[0];
}

function indexerQueries(q: Tensor, indexer: IndexerParams, numTokens: number, op: string): CpuTensor {
  const t = asCpuTensor(q, `${op} q`);
  if (t.rows !== numTokens || t.cols !== indexer.numHeads * indexer.headDim) {
    throw new Error(`${op}: q [${t.shape.join(', ')}] is not [${numTokens}, ${indexer.numHeads} × ${indexer.headDim}]`);
  }
  return t;
}

/** A sparse MLA layer's indexer-key pool [slots, keyDim], in the dtype of its rows. */
function indexKeyPool(cache: KvCache, layer: number, indexer: IndexerParams): CpuKvPool {
  const kv = asCpuKvCache(cache);
  indexKeysKvLayer(kv.layout, layer, indexer);
  return kv.layerPools(layer)[1];
}

function asCpuTokenSelection(selection: TokenSelection, numTokens: number): Int32Array {
  if (!(selection instanceof CpuTokenSelection)) throw new Error('CpuBackend: selection is not from indexerTopK');
  if (selection.numTokens !== numTokens) throw new Error(`mlaAttention: a selection of ${selection.numTokens} tokens for a step of ${numTokens}`);
  return selection.positions;
}

/** indexerTopK's choice on the CPU: [numTokens, topK] positions. */
export class CpuTokenSelection implements TokenSelection {
  readonly numTokens: number;
  readonly topK: number;
  readonly positions: Int32Array;

  constructor(numTokens: number, topK: number, positions: Int32Array) {
    this.numTokens = numTokens;
    this.topK = topK;
    this.positions = positions;
  }
}

function rowsPool(cache: KvCache, layer: number, slots: Int32Array, op: string): { pool: Float32Array; width: number } {
  const kv = asCpuKvCache(cache);
  const { width } = rowsKvLayer(kv.layout, layer, slots, op);
  // Rows are kept in float32 whatever the cache's dtype (kvLayerDtype): anything else is a wiring bug.
  const { codes } = kv.layerPools(layer)[0];
  if (!(codes instanceof Float32Array)) throw new Error(`CpuBackend: ${op}: layer ${layer}'s rows pool is not float32`);
  return { pool: codes, width };
}

function layerPools(cache: KvCache, layer: number, attn: AttentionParams): LayerKvPools {
  const kv = asCpuKvCache(cache);
  const spec = attentionKvLayer(kv.layout, layer, attn);
  const [keys, values, summaries] = kv.layerPools(layer);
  // A pool shared with a sparse layer of another KV group keeps summaries this layer neither writes nor reads.
  return { keys, values, kScale: attn.kvScales?.k ?? 1, vScale: attn.kvScales?.v ?? 1, summaries: spec.keySummaries === true ? (summaries.codes as Float32Array) : null };
}

/**
 * Writes row `row` of an embedding table into `into`: a 16-bit table's values, or a quantized
 * one's dequantized (decodeRow: each value rounded to float32 once, as `dequantizeWeight` gives it).
 */
function tableRowReader(table: Tensor): (row: number, into: Float32Array) => void {
  if (table instanceof CpuQuantizedTensor) return (row, into) => decodeRow(table.weight, row, into);
  const t = asCpuTensor(table, 'embedding table');
  return (row, into) => into.set(t.data.subarray(row * t.cols, (row + 1) * t.cols));
}

/** Draft trees in host arrays: the CPU's device memory. */
class CpuDraftTrees implements DraftTrees {
  readonly numTrees: number;
  readonly size: number;
  readonly nodes: DraftTreeNodes;

  constructor(numTrees: number, size: number) {
    if (!(Number.isInteger(numTrees) && numTrees >= 0 && Number.isInteger(size) && size >= 1)) throw new RangeError(`beginDraftTrees: ${numTrees} trees of ${size} nodes`);
    this.numTrees = numTrees;
    this.size = size;
    const n = numTrees * size;
    this.nodes = { tokens: new Int32Array(n).fill(-1), parents: new Int32Array(n).fill(-1), logprobs: new Float32Array(n) };
  }

  read(): DraftTreeNodes {
    return { tokens: this.nodes.tokens.slice(), parents: this.nodes.parents.slice(), logprobs: this.nodes.logprobs.slice() };
  }
}

function asCpuDraftTrees(trees: DraftTrees): CpuDraftTrees {
  if (!(trees instanceof CpuDraftTrees)) throw new Error('CpuBackend: draft trees not from its beginDraftTrees');
  return trees;
}

/** Copies run src[i] to dst[i], pairs in order, of an array holding `count` equal runs. */
function copyRuns(array: { copyWithin(target: number, start: number, end: number): unknown; length: number }, count: number, src: Int32Array, dst: Int32Array): void {
  const width = array.length / count;
  for (let i = 0; i < src.length; i++) array.copyWithin(dst[i] * width, src[i] * width, (src[i] + 1) * width);
}
