import type { Tensor } from '../backend/backend.ts';

/**
 * Weights of one decoder layer as the forward pass uses them. Projections that read the same input
 * are merged at load time so each costs one GEMM: q/k/v into `qkv`, gate/up into `gateUp`.
 */
export interface LayerWeights {
  inputNorm: Tensor; // [hidden]
  qkv: Tensor; // [(numHeads + 2 * numKvHeads) * headDim, hidden]: q rows, then k, then v
  qkvBias: Tensor | null; // [(numHeads + 2 * numKvHeads) * headDim]
  qNorm: Tensor | null; // [headDim] (qwen3)
  kNorm: Tensor | null; // [headDim] (qwen3)
  o: Tensor; // [hidden, numHeads * headDim]
  oBias: Tensor | null; // [hidden]
  postAttentionNorm: Tensor; // [hidden]
  gateUp: Tensor; // [2 * intermediate, hidden]: gate rows, then up
  down: Tensor; // [hidden, intermediate]
}

export interface LlamaWeights {
  embedding: Tensor; // [vocab, hidden]
  layers: LayerWeights[];
  finalNorm: Tensor; // [hidden]
  /** [vocab, hidden]; the same tensor as `embedding` when the checkpoint ties them. */
  lmHead: Tensor;
}
