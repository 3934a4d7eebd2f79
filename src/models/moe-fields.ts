import { invalidModel } from '../errors.ts';
import type { ConfigFields } from './hf-config.ts';

/*
 * Config keys the mixture-of-experts families share. transformers maps one spelling onto the
 * other (`attribute_map`), so a config.json may carry either.
 */

/**
 * The number of routed experts: `num_local_experts` (Mixtral, and what transformers 5 writes for
 * Qwen3-MoE) or `num_experts` (Qwen's Hub configs); both present must agree.
 */
export function parseNumExperts(fields: ConfigFields): number {
  const local = fields.raw('num_local_experts');
  const plain = fields.raw('num_experts');
  if (local != null && plain != null && local !== plain) {
    throw invalidModel(`${fields.source}: num_local_experts (${JSON.stringify(local)}) and num_experts (${JSON.stringify(plain)}) disagree`);
  }
  if (local == null && plain == null) throw invalidModel(`${fields.source}: required key "num_experts" (or "num_local_experts") is missing`);
  return fields.positiveInt(local != null ? 'num_local_experts' : 'num_experts');
}

/** `num_experts_per_tok`, checked against the number of experts. */
export function parseExpertsPerToken(fields: ConfigFields, numExperts: number): number {
  const topK = fields.positiveInt('num_experts_per_tok');
  if (topK > numExperts) throw invalidModel(`${fields.source}: num_experts_per_tok (${topK}) exceeds the ${numExperts} experts`);
  return topK;
}
