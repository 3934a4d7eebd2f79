import type { Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import type { ResidualNorm } from '../layers/norm.ts';
import type { Layer } from '../layers/parameters.ts';

// The parts of a pre-norm decoder layer as the layers that run them see them (decoder.ts's
// preNormLayerForward, the MTP head's block): types only, so that what reads them need not import
// the decoder.

/** What follows attention in a decoder layer: a dense gated MLP or a mixture of experts. */
export interface FeedForward extends Layer {
  /** x [numTokens, hidden] -> [numTokens, hidden]. */
  forward(b: Backend, x: Tensor, step: StepInputs): Tensor;
}

/**
 * A pre-norm layer's parts, whatever its attention (full, windowed, latent): what preNormLayerForward
 * runs. A sandwich layer (GLM-4's) norms attention's and the MLP's outputs too before they join the
 * residual stream.
 */
export interface PreNormLayer {
  inputNorm: ResidualNorm;
  attention: { forward(b: Backend, x: Tensor, step: StepInputs, cache: KvCache): Tensor };
  /** Norm of attention's output before the residual add; absent or null: none. */
  attentionOutputNorm?: ResidualNorm | null;
  postAttentionNorm: ResidualNorm;
  mlp: FeedForward;
  /** Norm of the MLP's output before the residual add; absent or null: none. */
  mlpOutputNorm?: ResidualNorm | null;
}
