import type { AttentionShape, Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import type { LayerWeights, LlamaWeights } from './llama-weights.ts';
import type { ModelConfig } from './model-config.ts';

/**
 * The Llama-family decoder (llama, mistral, qwen2, qwen3) written once against the Backend ops.
 * The residual stream is summed in HF's order (embeddings + attention out + mlp out + ...); each
 * sublayer's output is added inside the next fused addRmsNorm.
 */
export class LlamaModel {
  private readonly config: ModelConfig;
  private readonly weights: LlamaWeights;
  private readonly backend: Backend;
  private readonly rope: Tensor;
  private readonly shape: AttentionShape;

  constructor(config: ModelConfig, weights: LlamaWeights, backend: Backend, rope: Tensor) {
    if (weights.layers.length !== config.numLayers) {
      throw invalidModel(`config declares ${config.numLayers} layers but the weights hold ${weights.layers.length}`);
    }
    if (config.numHeads % config.numKvHeads !== 0) {
      throw invalidModel(`num_attention_heads ${config.numHeads} is not a multiple of num_key_value_heads ${config.numKvHeads}`);
    }
    if (config.qkNorm) {
      const missing = weights.layers.findIndex((l) => l.qNorm === null || l.kNorm === null);
      if (missing >= 0) throw invalidModel(`layer ${missing} lacks q_norm/k_norm weights, which ${config.modelType} needs`);
    }
    this.config = config;
    this.weights = weights;
    this.backend = backend;
    this.rope = rope;
    this.shape = {
      numHeads: config.numHeads,
      numKvHeads: config.numKvHeads,
      headDim: config.headDim,
      scale: config.headDim ** -0.5,
      slidingWindow: config.slidingWindow,
    };
  }

  /** Runs one step; returns logits [logitsIndices.length, vocab] (the backend's tensor). */
  forward(step: StepInputs, cache: KvCache): Tensor {
    const b = this.backend;
    const eps = this.config.rmsNormEps;
    const residual = b.embedding(this.weights.embedding, step);
    // A sublayer's output waits here until the next norm adds it to the residual stream.
    let pending: Tensor | null = null;
    for (const [i, layer] of this.weights.layers.entries()) {
      const attnIn = pending === null ? b.rmsNorm(residual, layer.inputNorm, eps) : b.addRmsNorm(pending, residual, layer.inputNorm, eps);
      const attnOut = this.attention(attnIn, layer, i, step, cache);
      const mlpIn = b.addRmsNorm(attnOut, residual, layer.postAttentionNorm, eps);
      pending = this.mlp(mlpIn, layer);
    }
    // The final norm works row by row, so gathering the sampled rows first gives the same result for less work.
    const rows = b.gatherLogitsRows(residual, step);
    const hidden =
      pending === null
        ? b.rmsNorm(rows, this.weights.finalNorm, eps)
        : b.addRmsNorm(b.gatherLogitsRows(pending, step), rows, this.weights.finalNorm, eps);
    return b.linear(hidden, this.weights.lmHead, null);
  }

  private attention(x: Tensor, layer: LayerWeights, index: number, step: StepInputs, cache: KvCache): Tensor {
    const b = this.backend;
    const qkv = b.linear(x, layer.qkv, layer.qkvBias);
    if (this.config.qkNorm) b.qkNorm(qkv, layer.qNorm!, layer.kNorm!, this.shape, this.config.rmsNormEps);
    b.ropeAndCacheWrite(qkv, this.rope, cache, index, step, this.shape);
    const heads = b.attention(qkv, cache, index, step, this.shape);
    return b.linear(heads, layer.o, layer.oBias);
  }

  private mlp(x: Tensor, layer: LayerWeights): Tensor {
    const b = this.backend;
    return b.linear(b.gateUpSilu(x, layer.gateUp), layer.down, null);
  }
}
