import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { FIXTURES_DIR, listOracleFixtures } from './helpers/oracle-fixtures.ts';

// Beam search on CUDA against transformers' beams (test/beam-search.test.ts is the CPU side):
// candidates from the sampling kernel's top tokens, forks copying blocks on the device, CUDA
// graphs on. Only keel-tiny, a trained model: the random-weight fixtures' flat
// distributions leave beams whose scores bf16 rounding can reorder.

interface BeamCase {
  fixture: string;
  prompt: number;
  num_beams: number;
  length_penalty: number;
  early_stopping: boolean | 'never';
  stop: string;
  eos_token_ids: number[];
  max_new_tokens: number;
  beams: { tokens: number[] }[];
}

const { cases } = JSON.parse(readFileSync(join(FIXTURES_DIR, 'beam-search.json'), 'utf8')) as { cases: BeamCase[] };

test('CUDA: keel-tiny\'s beams equal transformers\'', async () => {
  const fixture = listOracleFixtures().find((f) => f.name === 'keel-tiny')!;
  const llm = await LLM.load({ backend: 'cuda', showProgress: false, blockSize: 16, numKvBlocks: 24 });
  try {
    for (const c of cases.filter((x) => x.fixture === 'keel-tiny')) {
      const [output] = await llm.generate([fixture.oracle.prompts[c.prompt]], {
        useBeamSearch: true,
        n: c.num_beams,
        lengthPenalty: c.length_penalty,
        earlyStopping: c.early_stopping,
        maxTokens: c.max_new_tokens,
        ...(c.stop === 'eos' ? {} : { ignoreEos: true, stopTokenIds: c.eos_token_ids }),
      });
      assert.deepEqual(
        output.outputs.map((o) => o.tokenIds),
        c.beams.map((b) => b.tokens),
        `prompt ${c.prompt}, ${c.num_beams} beams, length penalty ${c.length_penalty}, early stopping ${c.early_stopping}`,
      );
    }
    assert.equal(llm.stats().numFreeKvBlocks, 24);
  } finally {
    await llm.close();
  }
});
