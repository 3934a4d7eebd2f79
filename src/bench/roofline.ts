import type { ParameterSpec } from '../layers/parameters.ts';
import type { CausalLM } from '../models/causal-lm.ts';
import {
  attendedBytesPerToken,
  indexKeyBytesPerToken,
  keySummaryElementsPerBlock,
  sparseBlockCounts,
  type DecodeSelection,
  type KvCacheDtype,
  type LayerKvSpec,
} from '../step/kv-cache-layout.ts';

const elements = (p: ParameterSpec) => p.shape.reduce((a, b) => a * b, 1);

/** Parameters of the model, counted from the tensors its layers read (a tied table counts once). */
export function parameterCount(model: CausalLM): number {
  return model.parameters().reduce((n, p) => n + elements(p), 0);
}

/**
 * The share of a tensor a step of `numTokens` tokens reads: all of it, except that an untied input
 * embedding table gives only its tokens' rows (counted as none; a tied one is read whole as the LM
 * head), and an expert is read only if a token routes to it: with routing spread evenly, a share of
 * 1 - (1 - topK / numExperts) ^ numTokens of the experts.
 */
function shareRead(model: CausalLM, p: ParameterSpec, numTokens: number): number {
  if (p.access === undefined) return 1;
  if (p.access.kind === 'rows') return model.config.tieWordEmbeddings ? 1 : 0;
  return 1 - (1 - p.access.topK / p.access.numExperts) ** numTokens;
}

/** Parameters a step of `numTokens` tokens reads (`shareRead` of each tensor's elements): what its FLOPs scale with. */
export function parametersReadPerStep(model: CausalLM, numTokens: number): number {
  return model.parameters().reduce((n, p) => n + elements(p) * shareRead(model, p, numTokens), 0);
}

/**
 * Weight bytes a step of `numTokens` tokens reads: `shareRead` of each tensor's bytes in the format
 * its layer loaded it in (`ParameterSpec.stored`: quantized codes with their scales, zeros, mins
 * and permutation, 2:4 values and metadata, MXFP4 blocks and scales), and of a 16-bit tensor's
 * elements at `weightElementBytes`, the backend's weight dtype.
 */
export function weightBytesReadPerStep(model: CausalLM, numTokens: number, weightElementBytes: number): number {
  return model.parameters().reduce((bytes, p) => {
    const stored = p.stored ?? { elements: elements(p), bytes: 0 };
    return bytes + (stored.elements * weightElementBytes + stored.bytes) * shareRead(model, p, numTokens);
  }, 0);
}

/** Positions a layer reads back: its sliding window, or all of them. */
function windowOf(spec: LayerKvSpec): number {
  return spec.kind === 'attention' && spec.slidingWindow !== null ? spec.slidingWindow : Infinity;
}

export interface RooflineInputs {
  /** The loaded model: its layers say each weight's format (`ParameterSpec.stored`) and each layer's sparse decode. */
  model: CausalLM;
  /** Bytes per element of a 16-bit weight on the backend (CPU float32: 4, CUDA bf16: 2). */
  weightElementBytes: number;
  /** Bytes per KV element of an `auto` cache; `kvCacheDtype` (absent: auto) says what the cache holds. */
  kvElementBytes: number;
  kvCacheDtype?: KvCacheDtype;
  /** Tokens per KV block: Quest selects whole blocks. */
  blockSize: number;
}

export interface DecodeRoofline {
  weight_bytes_per_step: number;
  kv_bytes_per_step: number;
  bytes_per_step: number;
  /** bytes_per_step / measured step time. */
  achieved_bytes_per_s: number;
  bandwidth_bytes_per_s: number | null;
  /** achieved / bandwidth: 1 means the step ran at the memory's speed. Null when no bandwidth is known. */
  fraction: number | null;
}

/**
 * Bytes one sequence's decode at `context` cached tokens reads of a layer's cache: the keys and
 * values (or MLA rows) of every position in its window; with Quest, once the sequence has more
 * blocks than the budget, the budget's blocks and the key summaries of every block (scored to
 * choose them); with DeepSeek Sparse Attention, the top-k positions' rows and, in a layer with an
 * indexer of its own, every position's index key (scored to choose them).
 */
function kvBytesPerSequence(inputs: RooflineInputs, spec: LayerKvSpec, selection: DecodeSelection | null, context: number): number {
  const attended = attendedBytesPerToken(spec, inputs.kvElementBytes, inputs.kvCacheDtype);
  const indexKeys = indexKeyBytesPerToken(spec, inputs.kvElementBytes, inputs.kvCacheDtype);
  const positions = Math.min(context, windowOf(spec));
  if (selection === null) return positions * (attended + indexKeys);
  if (selection.kind === 'top-k') return Math.min(positions, selection.topK) * attended + positions * indexKeys;
  const { blockSize } = inputs;
  const budget = sparseBlockCounts(selection.sparse, blockSize).budget;
  const blocks = Math.ceil(positions / blockSize);
  if (blocks <= budget) return positions * attended;
  return budget * blockSize * attended + blocks * keySummaryElementsPerBlock(spec) * inputs.kvElementBytes;
}

/**
 * How close a decode step came to the memory-bandwidth bound. A step must read every weight once,
 * in its loaded format (`weightBytesReadPerStep`), and what every sequence's attention reads of
 * the cache (`kvBytesPerSequence`); for `outputLen` tokens after an `inputLen` prompt the decode
 * steps attend over inputLen + 1 ... inputLen + outputLen - 1 tokens, inputLen + outputLen / 2 on
 * average. Activations are left out: at decode batch sizes they are orders of magnitude smaller.
 */
export function decodeRoofline(
  inputs: RooflineInputs,
  step: { batchSize: number; inputLen: number; outputLen: number; stepSeconds: number },
  bandwidthBytesPerSecond: number | null,
): DecodeRoofline {
  const { model } = inputs;
  const meanContext = step.inputLen + step.outputLen / 2;
  const weightBytes = weightBytesReadPerStep(model, step.batchSize, inputs.weightElementBytes);
  const kvBytes = step.batchSize * model.kvLayers.reduce((sum, spec, i) => sum + kvBytesPerSequence(inputs, spec, model.decodeSelections[i], meanContext), 0);
  const bytes = weightBytes + kvBytes;
  const achieved = bytes / step.stepSeconds;
  return {
    weight_bytes_per_step: weightBytes,
    kv_bytes_per_step: kvBytes,
    bytes_per_step: bytes,
    achieved_bytes_per_s: achieved,
    bandwidth_bytes_per_s: bandwidthBytesPerSecond,
    fraction: bandwidthBytesPerSecond === null ? null : achieved / bandwidthBytesPerSecond,
  };
}

export interface OffloadBound {
  /** Offloaded weight bytes every step copies to the device (`--cpu-offload-gb`). */
  host_bytes_per_step: number;
  host_to_device_bytes_per_s: number | null;
  /** The least time a step can take for its copies alone: host bytes / host-to-device bandwidth. */
  bound_step_s: number | null;
  /** bound / measured step time: 1 means the step ran at the copies' speed. */
  fraction: number | null;
}

/**
 * With weight offload, how close a decode step came to the bound of copying the offloaded layers
 * over PCIe, which every step does once whatever the batch (it then reads them from device memory
 * as the roofline counts).
 */
export function offloadBound(hostBytesPerStep: number, hostToDeviceBytesPerSecond: number | null, stepSeconds: number): OffloadBound {
  const bound = hostToDeviceBytesPerSecond === null ? null : hostBytesPerStep / hostToDeviceBytesPerSecond;
  return {
    host_bytes_per_step: hostBytesPerStep,
    host_to_device_bytes_per_s: hostToDeviceBytesPerSecond,
    bound_step_s: bound,
    fraction: bound === null ? null : bound / stepSeconds,
  };
}

/** One request of an offline workload: its prompt and output lengths. */
export interface WorkloadRequest {
  inputLen: number;
  outputLen: number;
}

/**
 * Model FLOPs of serving the requests (2 per multiply-add): every prompt token and every output
 * token but the last runs through the layers, attending over the keys up to its own (within each
 * layer's sliding window); the LM head runs once per output token. Norms, activations and softmax
 * are left out, as in the usual 2 × parameters × tokens count. An MoE layer counts its routed
 * experts only.
 */
export function workloadFlops(model: CausalLM, requests: readonly WorkloadRequest[]): number {
  const headParams = model.config.vocabSize * model.config.hiddenSize;
  const bodyParams = parametersReadPerStep(model, 1) - headParams;
  let flops = 0;
  for (const { inputLen, outputLen } of requests) {
    const tokens = inputLen + outputLen - 1;
    const attention = model.kvLayers.reduce((sum, spec, i) => sum + 2 * model.attentionMacsPerKey[i] * keysAttended(tokens, windowOf(spec)), 0);
    flops += 2 * bodyParams * tokens + 2 * headParams * outputLen + attention;
  }
  return flops;
}

/** Σ over positions 0..tokens-1 of the keys each attends to: min(position + 1, window). */
function keysAttended(tokens: number, window: number): number {
  if (tokens <= window) return (tokens * (tokens + 1)) / 2;
  return (window * (window + 1)) / 2 + (tokens - window) * window;
}

export interface ThroughputRoofline {
  flops: number;
  /** Every decode step reads every weight, and the longest output needs that many steps. */
  weight_bytes_lower_bound: number;
  /** Every decode step of every request reads that request's cache (`kvBytesOverDecode`), which no other request shares. */
  kv_bytes_lower_bound: number;
  peak_flops_per_s: number | null;
  bandwidth_bytes_per_s: number | null;
  /** The least time the workload can take: max(flops / peak, (weight + KV bytes) / bandwidth). */
  bound_s: number | null;
  /** bound_s / elapsed: 1 means the run was as fast as the device allows. */
  fraction: number | null;
}

/**
 * How close an offline run came to the device's limits: the workload's model FLOPs at the
 * measured matmul rate, or the bytes its decode steps must read (the weights once a step, each
 * request's cache once for each of its steps) at the measured bandwidth, whichever takes longer.
 */
export function throughputRoofline(
  inputs: RooflineInputs,
  requests: readonly WorkloadRequest[],
  elapsedSeconds: number,
  device: { flopsPerSecond: number | null; bandwidthBytesPerSecond: number | null },
): ThroughputRoofline {
  const flops = workloadFlops(inputs.model, requests);
  const longestOutput = Math.max(0, ...requests.map((r) => r.outputLen));
  const weightBytes = longestOutput * weightBytesReadPerStep(inputs.model, 1, inputs.weightElementBytes);
  const kvBytes = requests.reduce((sum, r) => sum + kvBytesOverDecode(inputs, r), 0);
  const bounds = [
    device.flopsPerSecond === null ? null : flops / device.flopsPerSecond,
    device.bandwidthBytesPerSecond === null ? null : (weightBytes + kvBytes) / device.bandwidthBytesPerSecond,
  ].filter((b): b is number => b !== null);
  const bound = bounds.length === 0 ? null : Math.max(...bounds);
  return {
    flops,
    weight_bytes_lower_bound: weightBytes,
    kv_bytes_lower_bound: kvBytes,
    peak_flops_per_s: device.flopsPerSecond,
    bandwidth_bytes_per_s: device.bandwidthBytesPerSecond,
    bound_s: bound,
    fraction: bound === null ? null : bound / elapsedSeconds,
  };
}

/**
 * Cache bytes a request's decode steps read: the step that feeds output token j (1 ... outputLen - 1)
 * attends over inputLen + j positions of every layer (`kvBytesPerSequence`: windows, Quest, sparse
 * attention). Dense layers sum in closed form, selecting ones step by step.
 */
export function kvBytesOverDecode(inputs: RooflineInputs, { inputLen, outputLen }: WorkloadRequest): number {
  const first = inputLen + 1;
  const last = inputLen + outputLen - 1;
  if (last < first) return 0;
  const { model } = inputs;
  return model.kvLayers.reduce((sum, spec, i) => {
    const selection = model.decodeSelections[i];
    if (selection === null) {
      const perPosition = attendedBytesPerToken(spec, inputs.kvElementBytes, inputs.kvCacheDtype) + indexKeyBytesPerToken(spec, inputs.kvElementBytes, inputs.kvCacheDtype);
      const window = windowOf(spec);
      return sum + perPosition * (keysAttended(last, window) - keysAttended(first - 1, window));
    }
    let bytes = 0;
    for (let context = first; context <= last; context++) bytes += kvBytesPerSequence(inputs, spec, selection, context);
    return sum + bytes;
  }, 0);
}
