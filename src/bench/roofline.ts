import type { ParameterSpec } from '../layers/parameters.ts';
import type { CausalLM } from '../models/causal-lm.ts';
import { kvBytesPerToken, type KvCacheDtype, type LayerKvSpec } from '../step/kv-cache-layout.ts';

const elements = (p: ParameterSpec) => p.shape.reduce((a, b) => a * b, 1);

/** Parameters of the model, counted from the tensors its layers read (a tied table counts once). */
export function parameterCount(model: CausalLM): number {
  return model.parameters().reduce((n, p) => n + elements(p), 0);
}

/**
 * Parameters a step of `numTokens` tokens reads: every weight, except that an untied input
 * embedding table gives only its tokens' rows (a tied one is read whole as the LM head), and an
 * expert is read only if a token routes to it: with routing spread evenly, a share of
 * 1 - (1 - topK / numExperts) ^ numTokens of the experts.
 */
export function parametersReadPerStep(model: CausalLM, numTokens: number): number {
  let count = 0;
  for (const p of model.parameters()) {
    if (p.access === undefined) count += elements(p);
    else if (p.access.kind === 'rows') count += model.config.tieWordEmbeddings ? elements(p) : 0;
    else count += elements(p) * (1 - (1 - p.access.topK / p.access.numExperts) ** numTokens);
  }
  return count;
}

/** Positions a layer reads back: its sliding window, or all of them. */
function windowOf(spec: LayerKvSpec): number {
  return spec.kind === 'attention' && spec.slidingWindow !== null ? spec.slidingWindow : Infinity;
}

export interface RooflineInputs {
  model: CausalLM;
  /** Bytes per weight element on the backend (CPU float32: 4, CUDA bf16: 2). */
  weightElementBytes: number;
  /** Bytes per KV element of an `auto` cache; `kvCacheDtype` (absent: auto) says what the cache holds. */
  kvElementBytes: number;
  kvCacheDtype?: KvCacheDtype;
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
 * How close a decode step came to the memory-bandwidth bound. A step must read every weight once
 * and every sequence's cached keys and values; for `outputLen` tokens after an `inputLen` prompt
 * the decode steps attend over inputLen + 1 ... inputLen + outputLen - 1 tokens, inputLen +
 * outputLen / 2 on average (capped by each layer's sliding window). Activations are left out: at
 * decode batch sizes they are orders of magnitude smaller.
 */
export function decodeRoofline(
  inputs: RooflineInputs,
  step: { batchSize: number; inputLen: number; outputLen: number; stepSeconds: number },
  bandwidthBytesPerSecond: number | null,
): DecodeRoofline {
  const { model } = inputs;
  const meanContext = step.inputLen + step.outputLen / 2;
  const weightBytes = parametersReadPerStep(model, step.batchSize) * inputs.weightElementBytes;
  const kvBytesPerSequence = model.kvLayers.reduce((sum, spec) => sum + kvBytesPerToken([spec], inputs.kvElementBytes, inputs.kvCacheDtype) * Math.min(meanContext, windowOf(spec)), 0);
  const kvBytes = step.batchSize * kvBytesPerSequence;
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
  peak_flops_per_s: number | null;
  bandwidth_bytes_per_s: number | null;
  /** The least time the workload can take: max(flops / peak, weight bytes / bandwidth). */
  bound_s: number | null;
  /** bound_s / elapsed: 1 means the run was as fast as the device allows. */
  fraction: number | null;
}

/**
 * How close an offline run came to the device's limits: the workload's model FLOPs at the
 * measured matmul rate, or the weight bytes its decode steps must read at the measured bandwidth,
 * whichever takes longer.
 */
export function throughputRoofline(
  inputs: RooflineInputs,
  requests: readonly WorkloadRequest[],
  elapsedSeconds: number,
  device: { flopsPerSecond: number | null; bandwidthBytesPerSecond: number | null },
): ThroughputRoofline {
  const flops = workloadFlops(inputs.model, requests);
  const longestOutput = Math.max(0, ...requests.map((r) => r.outputLen));
  const weightBytes = longestOutput * parametersReadPerStep(inputs.model, 1) * inputs.weightElementBytes;
  const bounds = [
    device.flopsPerSecond === null ? null : flops / device.flopsPerSecond,
    device.bandwidthBytesPerSecond === null ? null : weightBytes / device.bandwidthBytesPerSecond,
  ].filter((b): b is number => b !== null);
  const bound = bounds.length === 0 ? null : Math.max(...bounds);
  return {
    flops,
    weight_bytes_lower_bound: weightBytes,
    peak_flops_per_s: device.flopsPerSecond,
    bandwidth_bytes_per_s: device.bandwidthBytesPerSecond,
    bound_s: bound,
    fraction: bound === null ? null : bound / elapsedSeconds,
  };
}
