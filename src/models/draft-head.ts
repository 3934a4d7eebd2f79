import type { Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import type { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import type { Layer } from '../layers/parameters.ts';
import type { LayerKvSpec } from '../step/kv-cache-layout.ts';

/**
 * The target's hidden states a head drafts from: the final norm's output (EAGLE, MTP), or the
 * residual stream entering some of its layers (EAGLE-3's low, middle and high layers).
 */
export type TargetStates = { kind: 'final' } | { kind: 'layerInputs'; layers: readonly number[] };

/** What a head shares with its target: the token embedding, and the LM head (EAGLE, Qwen's MTP). */
export interface TargetLayers {
  embedding: VocabEmbedding;
  lmHead: LmHead;
}

/**
 * A speculative head that drafts from the target's hidden states with one decoder layer of its
 * own (EAGLE, EAGLE-3, DeepSeek's MTP). At position p it reads the token after p and a feature
 * row for p (the target's, from `features`, or its own output at p - 1 while drafting), and
 * gives its own output there (the feature for p + 1) and logits of the token after next. Its
 * layer keeps its K/V in a paged cache of its own: layer 0 of the cache it is run with.
 */
export interface DraftHead extends Layer {
  /** 'EAGLE', 'EAGLE-3', 'MTP': for messages. */
  readonly name: string;
  readonly kvLayer: LayerKvSpec;
  /** Width of a feature row. */
  readonly featureWidth: number;
  readonly targetStates: TargetStates;
  /**
   * The feature rows [numTokens, featureWidth] of the target's tapped states: the final norm's
   * output as it is, or EAGLE-3's fc over its layers' states side by side.
   */
  features(b: Backend, states: readonly Tensor[]): Tensor;
  /**
   * One pass over the step's tokens (each the token after its position) with their feature rows
   * [numTokens, featureWidth], which it may overwrite (they serve as its residual stream); returns, on the step's logits rows, the head's output (the next
   * feature) and its logits (over its own vocabulary: see `draftToTarget`).
   */
  forward(b: Backend, step: StepInputs, cache: KvCache, features: Tensor): { hidden: Tensor; logits: Tensor };
  /** Target token id of each of its vocabulary's ids (EAGLE-3's reduced draft vocabulary); null: the target's ids. */
  readonly draftToTarget: Int32Array | null;
}
