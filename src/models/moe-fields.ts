import { invalidModel } from '../errors.ts';
import type { ConfigFields } from './hf-config.ts';

/*
 * Config keys the mixture-of-experts families share. transformers maps one spelling onto the
 * other (`attribute_map`), so a config.json may carry either.
 */

/**
 * The number of routed experts: `num_local_experts` (Mixtral, and what transformers 5 writes for
 * Qwen3-MoE) or `num_experts` (Qwen's Hub configs); both present must agree. `fallback` is the
 * config class's default where it has one.
 */
export function parseNumExperts(fields: ConfigFields, fallback?: number): number {
  const local = fields.raw('num_local_experts');
  const plain = fields.raw('num_experts');
  if (local != null && plain != null && local !== plain) {
    throw invalidModel(`${fields.source}: num_local_experts (${JSON.stringify(local)}) and num_experts (${JSON.stringify(plain)}) disagree`);
  }
  if (local == null && plain == null && fallback !== undefined) return fallback;
  if (local == null && plain == null) throw invalidModel(`${fields.source}: required key "num_experts" (or "num_local_experts") is missing`);
  return fields.positiveInt(local != null ? 'num_local_experts' : 'num_experts');
}

/** `num_experts_per_tok` (default `fallback`, where the config class has one), checked against the number of experts. */
export function parseExpertsPerToken(fields: ConfigFields, numExperts: number, fallback?: number): number {
  const topK = fields.positiveInt('num_experts_per_tok', fallback);
  if (topK > numExperts) throw invalidModel(`${fields.source}: num_experts_per_tok (${topK}) exceeds the ${numExperts} experts`);
  return topK;
}

/**
 * Qwen's MoE layer choice (Qwen2-MoE, Qwen3-MoE, Qwen3-Next): layer i is sparse iff it is not in
 * `mlp_only_layers` and (i + 1) % `decoder_sparse_step` == 0.
 */
export function parseQwenSparseLayers(fields: ConfigFields, numLayers: number): boolean[] {
  const step = fields.positiveInt('decoder_sparse_step', 1);
  const dense = fields.raw('mlp_only_layers') ?? [];
  if (!Array.isArray(dense) || !dense.every((i) => Number.isInteger(i) && i >= 0 && i < numLayers)) {
    throw invalidModel(`${fields.source}: "mlp_only_layers" must list layer indices below ${numLayers} (got ${JSON.stringify(dense)})`);
  }
  return Array.from({ length: numLayers }, (_, i) => !dense.includes(i) && (i + 1) % step === 0);
}


/**
 * Whether each layer's feed-forward is sparse, as DeepSeek-V3.2's, GLM-4.7-Flash's, EXAONE MoE's and
 * Hy3's config classes read it: `mlp_layer_types` ("dense" or "sparse" per layer), else the first
 * `firstDense` layers dense and the rest sparse.
 */
export function parseMlpLayerTypes(fields: ConfigFields, numLayers: number, firstDense: number): boolean[] {
  const types = fields.raw('mlp_layer_types');
  if (types == null) return Array.from({ length: numLayers }, (_, i) => i >= firstDense);
  if (!(Array.isArray(types) && types.length === numLayers && types.every((t) => t === 'dense' || t === 'sparse'))) {
    throw invalidModel(`${fields.source}: mlp_layer_types must list "dense" or "sparse" for each of the ${numLayers} layers, not ${JSON.stringify(types)}`);
  }
  return types.map((t) => t === 'sparse');
}
