import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import { listOracleFixtures } from './helpers/oracle-fixtures.ts';
import { BEAM_CASES, type BeamCase } from './helpers/beam-cases.ts';

// Beam search (docs/long-context.md) against transformers' generate(num_beams=k, do_sample=False)
// on fixtures (tools/oracle/beam_search_oracle.py): every returned beam, in order, for several
// widths, length penalties, early-stopping rules and stop tokens.


const cases = BEAM_CASES;
const fixtures = new Map(listOracleFixtures().map((f) => [f.name, f]));

function beamParams(c: BeamCase) {
  return {
    useBeamSearch: true,
    n: c.num_beams,
    beamWidth: c.num_beams,
    lengthPenalty: c.length_penalty,
    earlyStopping: c.early_stopping,
    maxTokens: c.max_new_tokens,
    // A case that ends beams at another token than the model's EOS makes it the only one.
    ...(c.stop === 'eos' ? {} : { ignoreEos: true, stopTokenIds: c.eos_token_ids }),
  };
}

for (const name of new Set(cases.map((c) => c.fixture))) {
  test(`${name}: beam search returns transformers' beams`, async () => {
    const fixture = fixtures.get(name)!;
    // Small blocks, so that beams fork inside partly filled blocks and copy them on write.
    const llm = await LLM.load({ model: fixture.dir, backend: 'cpu', showProgress: false, blockSize: 4 });
    try {
      for (const c of cases.filter((c) => c.fixture === name)) {
        const [output] = await llm.generate([fixture.oracle.prompts[c.prompt]], beamParams(c));
        const what = `prompt ${c.prompt}, ${c.num_beams} beams, length penalty ${c.length_penalty}, early stopping ${c.early_stopping}, stop ${c.stop}`;
        assert.deepEqual(
          output.outputs.map((o) => o.tokenIds),
          c.beams.map((b) => b.tokens),
          what,
        );
        output.outputs.forEach((o, i) => {
          const stopped = c.eos_token_ids.includes(o.tokenIds[o.tokenIds.length - 1]);
          assert.equal(o.finishReason, stopped ? 'stop' : 'length', `${what}: beam ${i}`);
        });
        assert.equal(llm.stats().numFreeKvBlocks, llm.stats().numKvBlocks, `${what}: every beam's blocks are freed`);
      }
    } finally {
      await llm.close();
    }
  });
}

test('beams survive preemption in a tiny pool, with swapping, beside other requests, and give the same beams', async () => {
  const c = cases.find((x) => x.fixture === 'keel-tiny' && x.num_beams === 4)!;
  const fixture = fixtures.get('keel-tiny')!;
  const prompt = fixture.oracle.prompts[c.prompt];
  const llm = await LLM.load({ backend: 'cpu', showProgress: false, blockSize: 4, numKvBlocks: 14, maxNumBatchedTokens: 8, maxNumSeqs: 5, preemptionMode: 'swap', swapSpace: 0.01 });
  try {
    const others = fixture.oracle.prompts.map((p) => llm.generate([p], { temperature: 0, maxTokens: 20, ignoreEos: true }));
    const [output] = await llm.generate([prompt], beamParams(c));
    await Promise.all(others);
    assert.deepEqual(
      output.outputs.map((o) => o.tokenIds),
      c.beams.map((b) => b.tokens),
    );
    assert.ok(llm.stats().numPreemptionsTotal > 0, 'the 14-block pool was meant to force preemption');
    assert.equal(llm.stats().numFreeKvBlocks, 14);
    assert.equal(llm.stats().numFreeSwapBlocks, llm.stats().numSwapBlocks);
  } finally {
    await llm.close();
  }
});

test('beam search parameters are checked', async () => {
  const llm = await LLM.load({ backend: 'cpu', showProgress: false });
  try {
    await assert.rejects(llm.generate([[1, 2, 3]], { useBeamSearch: true, n: 3, beamWidth: 2 }), /n must be at most beamWidth \(2\)/);
    await assert.rejects(llm.generate([[1, 2, 3]], { beamWidth: 2 }), /beamWidth applies to beam search only/);
    await assert.rejects(llm.generate([[1, 2, 3]], { lengthPenalty: 2 }), /lengthPenalty applies to beam search only/);
    await assert.rejects(llm.generate([[1, 2, 3]], { useBeamSearch: true, stop: ['x'] }), /stop is not supported with useBeamSearch/);
    await assert.rejects(llm.generate([[1, 2, 3]], { useBeamSearch: true, logprobs: 2 }), /logprobs is not supported with useBeamSearch/);
    await assert.rejects(llm.generate([[1, 2, 3]], { useBeamSearch: true, beamWidth: 17 }), /needs the best 34 tokens of each beam/);
    await assert.rejects(llm.generate([[1, 2, 3]], { useBeamSearch: true, earlyStopping: 'sometimes' as 'never' }), /earlyStopping must be true, false or "never"/);
  } finally {
    await llm.close();
  }
});

test('LLM.beamSearch returns every beam, as generate with useBeamSearch and n = beamWidth', async () => {
  const c = cases.find((x) => x.fixture === 'keel-tiny' && x.stop === 'eos')!;
  const llm = await LLM.load({ backend: 'cpu', showProgress: false });
  try {
    const [output] = await llm.beamSearch([fixtures.get('keel-tiny')!.oracle.prompts[c.prompt]], {
      beamWidth: c.num_beams,
      maxTokens: c.max_new_tokens,
      lengthPenalty: c.length_penalty,
      earlyStopping: c.early_stopping,
    });
    assert.deepEqual(
      output.outputs.map((o) => o.tokenIds),
      c.beams.map((b) => b.tokens),
    );
  } finally {
    await llm.close();
  }
});
