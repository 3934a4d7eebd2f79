import type { Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import type { SelfAttention } from '../layers/attention.ts';
import type { RmsNorm } from '../layers/norm.ts';

/** The sublayers of a pre-norm decoder layer: Llama's shape, shared by the families built like it. */
export interface PreNormDecoderLayer {
  readonly inputNorm: RmsNorm;
  readonly attention: SelfAttention;
  readonly postAttentionNorm: RmsNorm;
  /** A gated MLP or a mixture of experts. */
  readonly mlp: { forward(b: Backend, x: Tensor): Tensor };
}

/**
 * The residual stream of a pre-norm decoder over the embedded tokens `residual`: h +=
 * attention(inputNorm(h)), then h += mlp(postAttentionNorm(h)), layer after layer. It is summed in
 * HF's order (embeddings + attention out + mlp out + ...): each sublayer's output is added inside
 * the next fused addRmsNorm. Returns finalNorm(h) of the rows whose logits the step wants.
 */
export function preNormDecoder(b: Backend, step: StepInputs, cache: KvCache, residual: Tensor, layers: readonly PreNormDecoderLayer[], finalNorm: RmsNorm): Tensor {
  // A sublayer's output waits here until the next norm adds it to the residual stream.
  let pending: Tensor | null = null;
  for (const layer of layers) {
    const attnIn: Tensor = pending === null ? layer.inputNorm.forward(b, residual) : layer.inputNorm.addAndForward(b, pending, residual);
    const attnOut = layer.attention.forward(b, attnIn, step, cache);
    pending = layer.mlp.forward(b, layer.postAttentionNorm.addAndForward(b, attnOut, residual));
  }
  // The final norm works row by row, so gathering the sampled rows first gives the same result for less work.
  const rows = b.gatherLogitsRows(residual, step);
  return pending === null ? finalNorm.forward(b, rows) : finalNorm.addAndForward(b, b.gatherLogitsRows(pending, step), rows);
}
