import { test } from 'node:test';
import { checkGreedy, checkLogits, type ParityOptions } from './transformers-parity.ts';
import { listOracleFixtures, type OracleFixture } from './oracle-fixtures.ts';

/**
 * The LLM.int8() fixture (quant-bnb-int8) against transformers running LLM.int8()'s mixed
 * decomposition. Its outlier columns are those of every row of a matmul, so its oracle holds for
 * one prompt at a time: each prompt alone must match as the parity suite's fixtures do (`alone`),
 * and all four batched together within `batched` (the int8 rounding of the columns that another
 * prompt's outliers move to 16-bit).
 */
export function llmInt8FixtureSuite(backend: 'cpu' | 'cuda', alone: Omit<ParityOptions, 'backend'>, batched: Omit<ParityOptions, 'backend'>): void {
  const fixture = listOracleFixtures({ batchDependent: true }).find((f) => f.name === 'quant-bnb-int8')!;
  fixture.oracle.prompts.forEach((_, i) => {
    const one = promptAlone(fixture, i);
    test(`prompt ${i} alone: last-token logits and greedy continuation as transformers'`, async () => {
      await checkLogits(one, { backend, ...alone });
      await checkGreedy(one, { backend, ...alone }, {}, false);
    });
  });
  test('all prompts batched: logits and greedy continuations within the int8 rounding of the shared outlier columns', async () => {
    await checkLogits(fixture, { backend, ...batched });
    await checkGreedy(fixture, { backend, ...batched }, {}, false);
  });
}

function promptAlone(fixture: OracleFixture, i: number): OracleFixture {
  const pick = <T>(values: T[] | undefined) => (values === undefined ? undefined : [values[i]]);
  const o = fixture.oracle;
  return {
    ...fixture,
    oracle: {
      ...o,
      prompts: [o.prompts[i]],
      last_logits: [o.last_logits[i]],
      greedy: [o.greedy[i]],
      bf16_max_abs_dlogit: pick(o.bf16_max_abs_dlogit),
      greedy_top_logprobs: pick(o.greedy_top_logprobs),
    },
  };
}
