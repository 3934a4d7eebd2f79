import { expectedTensorShapes } from '../model/load-llama-weights.ts';
import type { ModelConfig } from '../model/model-config.ts';

/** Parameters of the model, counted from the tensors its config implies (a tied table counts once). */
export function parameterCount(config: ModelConfig): number {
  let count = 0;
  for (const shape of expectedTensorShapes(config).values()) count += shape.reduce((a, b) => a * b, 1);
  return count;
}

/**
 * Parameters one decode step reads in full: all of them except an untied input embedding table,
 * of which a step gathers only its batch's rows (a tied table is read whole as the LM head).
 */
export function parametersReadPerDecodeStep(config: ModelConfig): number {
  return parameterCount(config) - (config.tieWordEmbeddings ? 0 : config.vocabSize * config.hiddenSize);
}

/** K and V bytes one cached token holds across all layers. */
export function kvBytesPerToken(config: ModelConfig, kvElementBytes: number): number {
  return 2 * config.numLayers * config.numKvHeads * config.headDim * kvElementBytes;
}

export interface RooflineInputs {
  config: ModelConfig;
  /** Bytes per weight element on the backend (CPU float32: 4, CUDA bf16: 2). */
  weightElementBytes: number;
  kvElementBytes: number;
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
 * outputLen / 2 on average (capped by a sliding window). Activations are left out: at decode
 * batch sizes they are orders of magnitude smaller.
 */
export function decodeRoofline(
  inputs: RooflineInputs,
  step: { batchSize: number; inputLen: number; outputLen: number; stepSeconds: number },
  bandwidthBytesPerSecond: number | null,
): DecodeRoofline {
  const { config } = inputs;
  const meanContext = Math.min(step.inputLen + step.outputLen / 2, config.slidingWindow ?? Infinity);
  const weightBytes = parametersReadPerDecodeStep(config) * inputs.weightElementBytes;
  const kvBytes = step.batchSize * meanContext * kvBytesPerToken(config, inputs.kvElementBytes);
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

/** One request of an offline workload: its prompt and output lengths. */
export interface WorkloadRequest {
  inputLen: number;
  outputLen: number;
}

/**
 * Model FLOPs of serving the requests (2 per multiply-add): every prompt token and every output
 * token but the last runs through the layers, attending over the keys up to its own (within a
 * sliding window); the LM head runs once per output token. Norms, activations and softmax are left
 * out, as in the usual 2 × parameters × tokens count.
 */
export function workloadFlops(config: ModelConfig, requests: readonly WorkloadRequest[]): number {
  const headParams = config.vocabSize * config.hiddenSize;
  const bodyParams = parametersReadPerDecodeStep(config) - headParams;
  const attentionPerKey = 4 * config.numLayers * config.numHeads * config.headDim;
  const window = config.slidingWindow ?? Infinity;
  let flops = 0;
  for (const { inputLen, outputLen } of requests) {
    const tokens = inputLen + outputLen - 1;
    flops += 2 * bodyParams * tokens + 2 * headParams * outputLen + attentionPerKey * keysAttended(tokens, window);
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
  const flops = workloadFlops(inputs.config, requests);
  const longestOutput = Math.max(0, ...requests.map((r) => r.outputLen));
  const weightBytes = longestOutput * parametersReadPerDecodeStep(inputs.config) * inputs.weightElementBytes;
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
