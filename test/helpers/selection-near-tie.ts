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

/** A prompt's greedy continuation that left transformers' (transformers-parity.ts, greedyDeparture). */
export interface GreedyDeparture {
  prompt: number;
  /** The prompt, then transformers' tokens before the departing step: the context whose last position chose differently. */
  path: number[];
  /** The token the backend chose at the path's last position (null where no single step departed). */
  token: number | null;
  message: string;
  /** False for what no near-tie explains (a wrong token count, an oracle without candidates). */
  excusable: boolean;
}

/**
 * The greedy departures that neither bf16 rounding nor a discrete choice explains. A departure is
 * excused where Keel's bf16 twin (the CPU backend rounding weights and activations to bf16 where the
 * CUDA backend stores them), prefilling transformers' own path up to the departure, picks the same
 * token: the backend then computed what bf16 at Keel's rounding points computes, as the logits
 * check accepts the twin's error (kimi-linear: bf16 rounding moves a router input enough to flip a
 * choice 2.4 % apart in float32, and the twin and the H100 both leave the path for the same token).
 * Past the twin, a prompt is excused where the float32 CPU backend, prefilling the same path, made a
 * choice within SELECTION_NEAR_TIE at the path's last position, the one whose logits picked the
 * departing token. Earlier positions are not counted: MoE fixtures route a generated token within
 * 1 % every few steps (hy-v3: 0.66 % at prompt 0's first), so any long path would hold one. At most
 * half the prompts may be excused by near-ties, as for the logits.
 */
export async function unexcusedGreedyDepartures(model: string, departures: readonly GreedyDeparture[], numPrompts: number): Promise<string[]> {
  if (departures.length === 0) return [];
  const paths = departures.map((d) => d.path);
  const twin = await traceBackend(model, 'cpu-bf16', paths, { ops: false });
  const twinAgrees = departures.map((d, i) => d.excusable && d.token !== null && argmax(twin.logits[i]) === d.token);
  const { closestChoices } = await traceBackend(model, 'cpu', paths, { ops: false, choicesFrom: paths.map((p) => p.length - 1) });
  const describe = (i: number) => {
    const c = closestChoices[i];
    const twinChoice = `the bf16 twin picks ${argmax(twin.logits[i])} there`;
    return c === null ? `no discrete choice at the position that departed; ${twinChoice}` : `its closest choice there: ${c.op} at position ${c.position}, ${(100 * c.margin).toFixed(2)} % apart in float32; ${twinChoice}`;
  };
  const nearTie = departures.map((d, i) => !twinAgrees[i] && d.excusable && (closestChoices[i]?.margin ?? Infinity) < SELECTION_NEAR_TIE);
  const excusedPrompts = new Set(departures.filter((_, i) => nearTie[i]).map((d) => d.prompt));
  if (excusedPrompts.size > numPrompts / 2) {
    return departures.flatMap((d, i) => (twinAgrees[i] ? [] : [`${d.message} (${describe(i)}; near-ties would excuse ${excusedPrompts.size} of ${numPrompts} prompts, more than half)`]));
  }
  return departures.flatMap((d, i) => (nearTie[i] || twinAgrees[i] ? [] : [`${d.message} (${describe(i)})`]));
}

function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}
