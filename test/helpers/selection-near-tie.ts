import type { EngineOptions } from '../../src/config.ts';
import { traceBackend } from '../../scripts/backend-comparison.ts';

/**
 * Margin (a choice's gap over its candidates' largest magnitude, src/backend/cpu/ops/selection-margin.ts)
 * under which bf16 may choose the other way: CUDA's activations sit up to about 1 % of their range
 * from float32's after a few layers (llama4-text with int4 experts on the H100: 1.3 % at the last
 * router's input, which chose another expert where float32's two candidates were 0.5 % apart).
 */
export const SELECTION_NEAR_TIE = 0.01;

/**
 * The failures (prompt index → message) of a backend's last-token logits that a discrete choice
 * does not explain: a prompt is excused where the float32 CPU backend, prefilling the same prompts
 * in one step, made a choice on one of its tokens (MoE routing, the lightning indexer's positions)
 * within SELECTION_NEAR_TIE: rounding elsewhere may have gone the other way, and the logits follow
 * another computation from there. At most half the prompts may be excused, so a kernel fault,
 * which shows on every prompt, still fails. Each remaining message names its prompt's closest choice.
 */
export async function unexcusedBySelectionNearTies(
  model: string,
  prompts: readonly number[][],
  failures: Map<number, string>,
  options: { blockSize?: number; quantization?: EngineOptions['quantization'] } = {},
): Promise<string[]> {
  if (failures.size === 0) return [];
  const { closestChoices } = await traceBackend(model, 'cpu', prompts, { ops: false, ...options });
  const describe = (i: number) => {
    const c = closestChoices[i];
    return c === null ? 'it makes no discrete choice' : `its closest choice: ${c.op} at position ${c.position}, ${(100 * c.margin).toFixed(2)} % apart in float32`;
  };
  const excused = [...failures.keys()].filter((i) => (closestChoices[i]?.margin ?? Infinity) < SELECTION_NEAR_TIE);
  if (excused.length > prompts.length / 2) {
    return [...failures].map(([i, message]) => `${message} (${describe(i)}; near-ties would excuse ${excused.length} of ${prompts.length} prompts, more than half)`);
  }
  return [...failures].filter(([i]) => !excused.includes(i)).map(([i, message]) => `${message} (${describe(i)})`);
}
