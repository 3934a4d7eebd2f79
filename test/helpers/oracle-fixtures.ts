import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A tiny random-weight checkpoint with transformers' own outputs (tools/oracle/make_fixtures.py). */
export interface OracleFixture {
  name: string;
  dir: string;
  oracle: {
    name: string;
    model_type: string;
    description: string;
    stored_dtype: 'float32' | 'bfloat16' | 'float16';
    prompts: number[][];
    last_logits: number[][];
    greedy: number[][];
    /** Per prompt, max |logit - last_logits| of transformers running the checkpoint in bfloat16 (newer oracles). */
    bf16_max_abs_dlogit?: number[];
    /** Per prompt, that bfloat16 run's last-token logits and its greedy continuation (newer oracles still). */
    bf16_last_logits?: number[][];
    bf16_greedy?: number[][];
    /** Per prompt and greedy step, transformers' candidates [token id, logprob], best first: the top 5 and any other within 1 nat of the best. */
    greedy_top_logprobs?: [number, number][][][];
    max_new_tokens: number;
    /**
     * false where one prompt's outputs depend on what is batched beside it (LLM.int8()'s outlier
     * columns): the oracle holds for each prompt run alone.
     */
    batch_invariant?: boolean;
  };
}

export const FIXTURES_DIR = fileURLToPath(new URL('../fixtures', import.meta.url));
/** The models shipped in the repo carry the same oracle, written by tools/train/train_default_model.py. */
export const MODELS_DIR = fileURLToPath(new URL('../../models', import.meta.url));

/**
 * Every fixture and shipped model with an oracle. Those whose oracle holds only for one prompt at
 * a time (`batch_invariant: false`) are left out unless asked for: suites batch prompts together.
 */
export function listOracleFixtures(options: { batchDependent?: boolean } = {}): OracleFixture[] {
  const fixtures = [FIXTURES_DIR, MODELS_DIR].flatMap((root) =>
    readdirSync(root, { withFileTypes: true })
      .filter((entry) => entry.isDirectory() && existsSync(join(root, entry.name, 'oracle.json')))
      .map((entry) => {
        const dir = join(root, entry.name);
        return { name: entry.name, dir, oracle: JSON.parse(readFileSync(join(dir, 'oracle.json'), 'utf8')) };
      })
      .sort((a, b) => a.name.localeCompare(b.name)),
  );
  return options.batchDependent ? fixtures : fixtures.filter((f: OracleFixture) => f.oracle.batch_invariant !== false);
}

/** max |a - b| over two equal-length vectors. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}
