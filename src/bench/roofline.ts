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
