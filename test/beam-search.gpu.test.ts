import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { listOracleFixtures } from './helpers/oracle-fixtures.ts';
import { BEAM_CASES } from './helpers/beam-cases.ts';

// Beam search on CUDA against transformers' beams (test/beam-search.test.ts is the CPU side):
// candidates from the sampling kernel's top tokens, forks copying blocks on the device, CUDA
// graphs on. Only keel-tiny, a trained model: the random-weight fixtures' flat distributions leave
// beams whose scores bf16 rounding can reorder. Even on keel-tiny two beams can tie within bf16
// noise (0.008 apart on one case): a beam that differs from transformers' must score, by this
// backend's own logprobs, at least as well as the one it replaced, and within 0.5 % of
// transformers' score for that rank.


const cases = BEAM_CASES;

/** A beam's score as transformers ranks beams: its tokens' summed logprob over its length to the penalty, teacher-forced on `llm`. */
async function beamScore(llm: LLM, prompt: number[], tokens: number[], lengthPenalty: number): Promise<number> {
  const [output] = await llm.generate([[...prompt, ...tokens]], { maxTokens: 1, promptLogprobs: 0, temperature: 0 });
  let sum = 0;
  for (let i = prompt.length; i < prompt.length + tokens.length; i++) sum += output.promptLogprobs![i]!.sampled.logprob;
  return sum / Math.pow(tokens.length, lengthPenalty);
}

test('CUDA: keel-tiny\'s beams equal transformers\' up to bf16 ties', async () => {
  const fixture = listOracleFixtures().find((f) => f.name === 'keel-tiny')!;
  const llm = await LLM.load({ backend: 'cuda', showProgress: false, blockSize: 16, numKvBlocks: 24 });
  try {
    for (const c of cases.filter((x) => x.fixture === 'keel-tiny')) {
      const what = `prompt ${c.prompt}, ${c.num_beams} beams, length penalty ${c.length_penalty}, early stopping ${c.early_stopping}`;
      const prompt = fixture.oracle.prompts[c.prompt];
      const [output] = await llm.generate([prompt], {
        useBeamSearch: true,
        n: c.num_beams,
        lengthPenalty: c.length_penalty,
        earlyStopping: c.early_stopping,
        maxTokens: c.max_new_tokens,
        ...(c.stop === 'eos' ? {} : { ignoreEos: true, stopTokenIds: c.eos_token_ids }),
      });
      assert.equal(output.outputs.length, c.beams.length, what);
      for (const [rank, beam] of c.beams.entries()) {
        const got = output.outputs[rank].tokenIds;
        if (got.join() === beam.tokens.join()) continue;
        const ours = await beamScore(llm, prompt, got, c.length_penalty);
        const theirs = await beamScore(llm, prompt, beam.tokens, c.length_penalty);
        const detail = `${what}, rank ${rank}: [${got}] (${ours}) for transformers' [${beam.tokens}] (${theirs} here, ${beam.score} there)`;
        assert.ok(ours >= theirs - 1e-3, `${detail}: the substitute scores worse`);
        assert.ok(Math.abs(ours - beam.score) <= 0.005 * Math.abs(beam.score), `${detail}: not a tie`);
      }
    }
    assert.equal(llm.stats().numFreeKvBlocks, 24);
  } finally {
    await llm.close();
  }
});
