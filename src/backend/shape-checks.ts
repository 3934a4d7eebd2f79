import { groupBlockTables, type BatchDescription } from '../step/batch.ts';
import { layoutIndex, type AttentionKvSpec, type KvCacheLayout, type MlaKvSpec, type RowsKvSpec } from '../step/kv-cache-layout.ts';
import type { AttentionParams, DeltaRuleParams, DraftTreeDepth, DraftTrees, ExpertWeights, IndexerParams, LoraShape, LoraSliceValues, MlaParams, RoutingParams, SelectiveScanParams } from './backend.ts';

/** Checks shared by every backend's attention ops: a mismatch here is a bug in the caller. */
export function assertPackedQkvWidth(cols: number, attn: AttentionParams): void {
  const width = (attn.numHeads + 2 * attn.numKvHeads) * attn.headDim;
  if (cols !== width) throw new Error(`qkv has ${cols} columns, the attention shape needs ${width}`);
}

/** selectiveScan's operands ([rows, cols] each) for a step of `numTokens` tokens: a mismatch is a bug in the caller. */
export function assertSelectiveScanShapes(shapes: { xbc: readonly number[]; dt: readonly number[]; z: readonly number[] }, numTokens: number, params: SelectiveScanParams): void {
  const { numHeads, headDim, numGroups, stateSize } = params;
  if (numHeads % numGroups !== 0) throw new Error(`selectiveScan: ${numHeads} heads do not split evenly over ${numGroups} groups`);
  const expected = { xbc: [numTokens, numHeads * headDim + 2 * numGroups * stateSize], dt: [numTokens, numHeads], z: [numTokens, numHeads * headDim] };
  for (const name of ['xbc', 'dt', 'z'] as const) {
    if (shapes[name].join() !== expected[name].join()) throw new Error(`selectiveScan: ${name} [${shapes[name].join(', ')}] is not [${expected[name].join(', ')}] for ${JSON.stringify(params)}`);
  }
}

/** How many decays a delta rule's token carries: one per value head, or one per key channel of each. */
export function deltaRuleDecays(params: DeltaRuleParams): number {
  return params.numValueHeads * (params.decay === 'keyChannel' ? params.keyDim : 1);
}

/** gatedDeltaRule's qkv and ba ([rows, cols] each) for a step of `numTokens` tokens: a mismatch is a bug in the caller. */
export function assertDeltaRuleShapes(qkv: readonly number[], ba: readonly number[], numTokens: number, params: DeltaRuleParams): void {
  const { numKeyHeads, numValueHeads, keyDim, valueDim } = params;
  if (numValueHeads % numKeyHeads !== 0) throw new Error(`gatedDeltaRule: ${numValueHeads} value heads do not split evenly over ${numKeyHeads} key heads`);
  const width = 2 * numKeyHeads * keyDim + numValueHeads * valueDim;
  if (qkv.join() !== [numTokens, width].join()) throw new Error(`gatedDeltaRule: qkv [${qkv.join(', ')}] does not fit ${numTokens} tokens of ${JSON.stringify(params)}`);
  const gates = numValueHeads + deltaRuleDecays(params);
  if (ba.join() !== [numTokens, gates].join()) throw new Error(`gatedDeltaRule: ba [${ba.join(', ')}] is not [${numTokens}, ${gates}]`);
}

/** layerNorm's groups: `width` values that tile a row of `cols`. */
/** The columns of x each value of an output gate covers (Backend.multiplyGate): 1, or a head's width where the gate has one value per head. */
export function gateGroup(x: readonly number[], gate: readonly number[]): number {
  const [rows, cols] = x;
  const [gateRows, gateCols] = gate;
  if (x.length !== 2 || gate.length !== 2 || gateRows !== rows || !(gateCols >= 1 && cols % gateCols === 0)) {
    throw new Error(`multiplyGate: a gate [${gate.join(', ')}] does not cover an input [${x.join(', ')}] in equal groups of columns`);
  }
  return cols / gateCols;
}

export function assertGroupWidth(cols: number, width: number): void {
  if (!(Number.isInteger(width) && width >= 1 && cols % width === 0)) throw new Error(`layerNorm: groups of ${width} do not tile rows of ${cols}`);
}

/** The layer's KV spec, checked to be an attention layer holding the heads `attn` reads. */
export function attentionKvLayer(layout: KvCacheLayout, layer: number, attn: AttentionParams): AttentionKvSpec {
  const spec = layout.layers[layoutIndex(layout, layer)];
  if (spec.kind !== 'attention') throw new Error(`KV cache layer ${layer} holds ${spec.kind} rows, not attention keys and values`);
  if (spec.numKvHeads !== attn.numKvHeads || spec.headDim !== attn.headDim) {
    throw new Error(`KV cache layer ${layer} holds ${spec.numKvHeads} heads of ${spec.headDim}, attention needs ${attn.numKvHeads} of ${attn.headDim}`);
  }
  const sparse = attn.sparse ?? null;
  if (sparse !== null && spec.keySummaries !== true) throw new Error(`KV cache layer ${layer} keeps no key summaries, which sparse attention selects blocks by`);
  if (sparse !== null && (attn.slidingWindow !== null || attn.streaming !== null)) {
    throw new Error(`layer ${layer}: sparse attention does not combine with a sliding window or StreamingLLM`);
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
  const spec = layout.layers[layoutIndex(layout, layer)];
  if (spec.kind !== 'mla') throw new Error(`KV cache layer ${layer} holds ${spec.kind} rows, not MLA rows`);
  if (spec.latentDim !== mla.latentDim || spec.ropeDim !== mla.ropeDim) {
    throw new Error(`KV cache layer ${layer} holds MLA rows of ${spec.latentDim} + ${spec.ropeDim}, attention needs ${mla.latentDim} + ${mla.ropeDim}`);
  }
  return spec;
}

/** The layer's KV spec, checked to be an MLA layer keeping indexer keys of the width `indexer` reads. */
export function indexKeysKvLayer(layout: KvCacheLayout, layer: number, indexer: IndexerParams): MlaKvSpec {
  const spec = layout.layers[layoutIndex(layout, layer)];
  if (spec.kind !== 'mla' || spec.indexKeys === undefined) throw new Error(`KV cache layer ${layer} keeps no indexer keys (it is not a sparse MLA layer)`);
  if (spec.indexKeys.keyDim !== indexer.headDim) throw new Error(`KV cache layer ${layer} keeps indexer keys of ${spec.indexKeys.keyDim}, the indexer needs ${indexer.headDim}`);
  return spec;
}

/**
 * The layer's KV spec, checked to be a rows layer (a speculative head's hidden rows), and `slots`
 * checked to lie in the cache: what writeCacheRows and readCacheRows check on every backend.
 */
export function rowsKvLayer(layout: KvCacheLayout, layer: number, slots: Int32Array, op: string): RowsKvSpec {
  const spec = layout.layers[layoutIndex(layout, layer)];
  if (spec.kind !== 'rows') throw new Error(`${op}: KV cache layer ${layer} holds ${spec.kind} rows, not hidden-state rows`);
  const numSlots = layout.numBlocks * layout.blockSize;
  for (const slot of slots) if (!(slot >= 0 && slot < numSlots)) throw new RangeError(`${op}: slot ${slot} is outside [0, ${numSlots})`);
  return spec;
}

/** Routing parameters that make sense for `numExperts` experts (a config error otherwise, caught at load). */
export function assertRoutingParams(params: Pick<RoutingParams, 'topK' | 'groups' | 'scale' | 'logitSoftcap'>, numExperts: number): void {
  const { topK, groups } = params;
  if (!(Number.isInteger(topK) && topK >= 1 && topK <= numExperts)) throw new Error(`routing: top-k ${topK} is outside [1, ${numExperts}] experts`);
  if (!Number.isFinite(params.scale)) throw new Error(`routing: scale ${params.scale} is not finite`);
  const cap = params.logitSoftcap ?? null;
  if (cap !== null && !(cap > 0 && Number.isFinite(cap))) throw new Error(`routing: logit soft-cap ${cap} is not a positive number`);
  if (groups === null) return;
  const { numGroups, topkGroups } = groups;
  if (!(Number.isInteger(numGroups) && numGroups >= 1 && numExperts % numGroups === 0)) {
    throw new Error(`routing: ${numExperts} experts do not form ${numGroups} equal groups`);
  }
  if (!(Number.isInteger(topkGroups) && topkGroups >= 1 && topkGroups <= numGroups)) throw new Error(`routing: ${topkGroups} kept groups of ${numGroups}`);
  const groupSize = numExperts / numGroups;
  if (groups.score === 'top2-sum' && groupSize < 2) throw new Error('routing: a top2-sum group score needs groups of at least 2 experts');
  if (topK > topkGroups * groupSize) throw new Error(`routing: top-k ${topK} exceeds the ${topkGroups * groupSize} experts of the kept groups`);
}

/** The experts' intermediate width n, with every tensor checked against [count, 2n, hidden] / [count, hidden, n]. */
export function expertWidth(experts: ExpertWeights, hidden: number, numExperts: number): number {
  const { first, count, gateUp, down, gateUpBias, downBias } = experts;
  const shape = (t: { shape: readonly number[] }) => `[${t.shape.join(', ')}]`;
  if (!(Number.isInteger(first) && Number.isInteger(count) && first >= 0 && count >= 1 && first + count <= numExperts)) {
    throw new Error(`expertMlp: experts ${first}..${first + count - 1} are outside the router's ${numExperts}`);
  }
  const n = gateUp.shape[1] / 2;
  const fits = (t: { shape: readonly number[] }, dims: number[]) => t.shape.length === dims.length && t.shape.every((d, i) => d === dims[i]);
  if (!Number.isInteger(n) || !fits(gateUp, [count, 2 * n, hidden])) throw new Error(`expertMlp: gate/up weights ${shape(gateUp)} do not fit ${count} experts of input ${hidden}`);
  if (!fits(down, [count, hidden, n])) throw new Error(`expertMlp: down weights ${shape(down)}, expected [${count}, ${hidden}, ${n}]`);
  if (gateUpBias !== null && !fits(gateUpBias, [count, 2 * n])) throw new Error(`expertMlp: gate/up bias ${shape(gateUpBias)}, expected [${count}, ${2 * n}]`);
  if (downBias !== null && !fits(downBias, [count, hidden])) throw new Error(`expertMlp: down bias ${shape(downBias)}, expected [${count}, ${hidden}]`);
  return n;
}

/** setLoraSlot's arguments against the weights' shape: a mismatch is a bug in the caller (the layer checks adapters). */
export function assertLoraSlot(shape: LoraShape, slot: number, rank: number, slices: readonly (LoraSliceValues | null)[]): void {
  if (!(Number.isInteger(slot) && slot >= 0 && slot < shape.slots)) throw new RangeError(`LoRA slot ${slot} is outside [0, ${shape.slots})`);
  if (!(Number.isInteger(rank) && rank >= 1 && rank <= shape.maxRank)) throw new RangeError(`LoRA rank ${rank} is outside [1, ${shape.maxRank}]`);
  if (slices.length !== shape.sliceRows.length) throw new Error(`${slices.length} LoRA slices for a linear of ${shape.sliceRows.length}`);
  slices.forEach((slice, s) => {
    if (slice === null) return;
    if (slice.a.length !== rank * shape.inFeatures || slice.b.length !== shape.sliceRows[s] * rank) {
      throw new Error(`LoRA slice ${s}: ${slice.a.length} A and ${slice.b.length} B values for rank ${rank}, ${shape.inFeatures} inputs and ${shape.sliceRows[s]} outputs`);
    }
  });
}

/** addLora's operands: x [tokens, in] and out [tokens, Σ slice rows], one adapter slot (or -1) per token. */
export function assertLoraOperands(shape: LoraShape, x: readonly number[], out: readonly number[], batch: BatchDescription): void {
  const outFeatures = shape.sliceRows.reduce((a, b) => a + b, 0);
  if (x.length !== 2 || out.length !== 2 || x[1] !== shape.inFeatures || out[1] !== outFeatures || x[0] !== out[0]) {
    throw new Error(`addLora: x [${x.join(', ')}] and out [${out.join(', ')}] do not fit LoRA weights of ${shape.inFeatures} inputs and ${outFeatures} outputs`);
  }
  const slots = batch.loraSlots;
  if (slots === null) return;
  if (slots.length !== x[0]) throw new Error(`addLora: ${slots.length} LoRA slots for ${x[0]} rows`);
  for (const slot of slots) if (!(slot >= -1 && slot < shape.slots)) throw new RangeError(`addLora: LoRA slot ${slot} is outside [-1, ${shape.slots})`);
}

/**
 * A swap between a device cache and a swap space: both hold the same layers with the same block
 * size, and every pair names a block of each (`from` is where the copies read).
 */
export function assertSwapPairs(cache: KvCacheLayout, swap: KvCacheLayout, src: Int32Array, dst: Int32Array, from: 'device' | 'host'): void {
  if (src.length !== dst.length) throw new Error(`swap: ${src.length} sources but ${dst.length} destinations`);
  if (cache.blockSize !== swap.blockSize || JSON.stringify(cache.layers) !== JSON.stringify(swap.layers)) {
    throw new Error('swap: the swap space was made for another cache layout');
  }
  if ((cache.dtype ?? 'auto') !== (swap.dtype ?? 'auto')) {
    throw new Error(`swap: the swap space holds ${swap.dtype ?? 'auto'} blocks but the cache is ${cache.dtype ?? 'auto'}`);
  }
  const [srcBlocks, dstBlocks] = from === 'device' ? [cache.numBlocks, swap.numBlocks] : [swap.numBlocks, cache.numBlocks];
  for (let i = 0; i < src.length; i++) {
    if (!(src[i] >= 0 && src[i] < srcBlocks && dst[i] >= 0 && dst[i] < dstBlocks)) {
      throw new RangeError(`swap: block pair ${src[i]} -> ${dst[i]} is outside [0, ${srcBlocks}) -> [0, ${dstBlocks})`);
    }
  }
}

/** A copy op's pairs (copyBlocks, copySlots, copyStateSlots): as many sources as destinations, each of the `count` `unit`s there are. */
export function checkCopyPairs(op: string, unit: string, src: Int32Array, dst: Int32Array, count: number): void {
  if (src.length !== dst.length) throw new Error(`${op}: ${src.length} sources but ${dst.length} destinations`);
  for (let i = 0; i < src.length; i++) {
    if (!(src[i] >= 0 && src[i] < count && dst[i] >= 0 && dst[i] < count)) {
      throw new RangeError(`${op}: ${unit} pair ${src[i]} -> ${dst[i]} is outside [0, ${count})`);
    }
  }
}

/**
 * The slot after each sequence's last token of `batch` in group `group` (cache index seqLens[s]),
 * checking that the sequence's block table reaches it: [numSeqs].
 */
export function nextSlots(batch: BatchDescription, group: number, blockSize: number, op: string): Int32Array {
  const tables = groupBlockTables(batch, group);
  return Int32Array.from(batch.seqLens, (index, s) => {
    const entry = Math.floor(index / blockSize);
    if (entry >= batch.maxBlocksPerSeq) throw new RangeError(`${op}: sequence ${s}'s block table of ${batch.maxBlocksPerSeq} entries does not reach cache index ${index}`);
    return tables[s * batch.maxBlocksPerSeq + entry] * blockSize + (index % blockSize);
  });
}

/** A depth of `expandDraftTrees`: per tree of `trees`, its arrays in range of the tree and of the latest pass's `passRows` rows. */
export function checkDraftTreeDepth(trees: DraftTrees, depth: DraftTreeDepth, passRows: number): void {
  const { counts, frontiers, keeps, rows } = depth;
  for (const [name, a] of [['counts', counts], ['frontiers', frontiers], ['keeps', keeps], ['rows', rows]] as const) {
    if (a.length !== trees.numTrees) throw new RangeError(`expandDraftTrees: ${a.length} ${name} for ${trees.numTrees} trees`);
  }
  for (let t = 0; t < trees.numTrees; t++) {
    if (keeps[t] === 0) continue;
    if (!(counts[t] >= 0 && keeps[t] > 0 && counts[t] + keeps[t] <= trees.size)) throw new RangeError(`expandDraftTrees: tree ${t} keeps ${keeps[t]} after ${counts[t]} nodes, past its ${trees.size}`);
    if (!(frontiers[t] >= 0 && frontiers[t] <= counts[t] && (frontiers[t] === 0) === (counts[t] === 0))) throw new RangeError(`expandDraftTrees: tree ${t} has a frontier of ${frontiers[t]} of its ${counts[t]} nodes`);
    if (!(rows[t] >= 0 && rows[t] + Math.max(1, frontiers[t]) <= passRows)) throw new RangeError(`expandDraftTrees: tree ${t}'s candidates at row ${rows[t]} are outside the ${passRows} rows of the last sampling pass`);
  }
}

/** The step's chunks as draft-tree chunks (`writeDraftTreeMask`, `readDraftTreeCacheRows`): a tree each, no longer than the tree plus its root. */
export function checkDraftTreeChunks(trees: DraftTrees, batch: BatchDescription, chunkTrees: Int32Array, op: string): void {
  if (chunkTrees.length !== batch.numSeqs) throw new RangeError(`${op}: ${chunkTrees.length} chunk trees for ${batch.numSeqs} chunks`);
  for (let s = 0; s < batch.numSeqs; s++) {
    const tree = chunkTrees[s];
    if (!(Number.isInteger(tree) && tree >= 0 && tree < trees.numTrees)) throw new RangeError(`${op}: chunk ${s}'s tree ${tree} is not one of the ${trees.numTrees}`);
    const len = batch.queryStartLoc[s + 1] - batch.queryStartLoc[s];
    if (len < 1 || len > trees.size + 1) throw new RangeError(`${op}: chunk ${s} has ${len} tokens, a root and up to ${trees.size} nodes expected`);
  }
}
