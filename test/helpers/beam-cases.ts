import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES_DIR } from './oracle-fixtures.ts';

/** One case of test/fixtures/beam-search.json: transformers' beams (tools/oracle/beam_search_oracle.py). */
export interface BeamCase {
  fixture: string;
  prompt: number;
  num_beams: number;
  length_penalty: number;
  early_stopping: boolean | 'never';
  stop: 'eos' | 'greedy';
  eos_token_ids: number[];
  max_new_tokens: number;
  beams: { tokens: number[]; score: number }[];
}

export const BEAM_CASES: readonly BeamCase[] = (JSON.parse(readFileSync(join(FIXTURES_DIR, 'beam-search.json'), 'utf8')) as { cases: BeamCase[] }).cases;
