import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { EngineOptions } from '../../src/config.ts';
import { LLM } from '../../src/engine/llm.ts';
import type { RequestOutput } from '../../src/engine/outputs.ts';
import { FIXTURES_DIR, type OracleFixture } from './oracle-fixtures.ts';
import { assertGreedyMatches, type ParityOptions } from './transformers-parity.ts';

/** A PEFT adapter fixture (tools/oracle/lora_fixtures.py): transformers' outputs on its base model with the adapter merged. */
export interface LoraFixture {
  /** The adapter's name, which requests give as their model. */
  name: string;
  dir: string;
  /** Its base fixture's directory, and the base model's own oracle. */
  base: OracleFixture;
  /** The merged model's oracle, in a base fixture's shape. */
  merged: OracleFixture;
}

export const LORA_FIXTURES_DIR = join(FIXTURES_DIR, 'lora');

export function listLoraFixtures(): LoraFixture[] {
  return readdirSync(LORA_FIXTURES_DIR, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => {
      const dir = join(LORA_FIXTURES_DIR, entry.name);
      const oracle = JSON.parse(readFileSync(join(dir, 'oracle.json'), 'utf8'));
      const baseDir = join(FIXTURES_DIR, oracle.base);
      return {
        name: entry.name,
        dir,
        base: { name: oracle.base, dir: baseDir, oracle: JSON.parse(readFileSync(join(baseDir, 'oracle.json'), 'utf8')) },
        merged: { name: entry.name, dir, oracle },
      };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}

export const GREEDY = { temperature: 0, ignoreEos: true } as const;
const TEST_KV_BLOCKS = 256;

/** An engine over the fixtures' one base model serving every adapter fixture under its name. */
export function loadWithAdapters(fixtures: readonly LoraFixture[], options: EngineOptions): Promise<LLM> {
  const bases = new Set(fixtures.map((f) => f.base.dir));
  assert.equal(bases.size, 1, 'the adapters share one base model');
  return LLM.load({
    model: [...bases][0],
    showProgress: false,
    numKvBlocks: TEST_KV_BLOCKS,
    loraModules: fixtures.map((f) => ({ name: f.name, path: f.dir })),
    maxLoraRank: Math.max(...fixtures.map(rankOf)),
    ...options,
  });
}

function rankOf(fixture: LoraFixture): number {
  return JSON.parse(readFileSync(join(fixture.dir, 'adapter_config.json'), 'utf8')).r;
}

/**
 * Each step's top alternatives as Keel scores them against transformers' candidates for that step:
 * each of transformers' first three within `tolerance` nats. Keel returns its top 20, not 5: its
 * 3rd to 6th candidates may lie within bf16 noise of each other (0.05 nats on one CUDA step), so
 * transformers' 3rd can rank 6th in Keel while its logprob is still close.
 */
function assertLogprobsClose(output: RequestOutput, fixture: OracleFixture, prompt: number, tolerance: number): void {
  const steps = output.outputs[0].logprobs!;
  const candidates = fixture.oracle.greedy_top_logprobs![prompt];
  const expected = fixture.oracle.greedy[prompt];
  for (let step = 0; step < steps.length && output.outputs[0].tokenIds[step] === expected[step]; step++) {
    const keel = new Map(steps[step].top.map((t) => [t.tokenId, t.logprob]));
    for (const [tokenId, logprob] of candidates[step].slice(0, 3)) {
      const got = keel.get(tokenId);
      assert.ok(got !== undefined && Math.abs(got - logprob) <= tolerance, `${fixture.name} prompt ${prompt} step ${step}: token ${tokenId} logprob ${got} vs transformers' ${logprob}`);
    }
  }
}

export interface LoraParityOptions extends Pick<ParityOptions, 'greedy' | 'logitTolerance' | 'backend'> {
  /** Largest |logprob - transformers' logprob| of a step's top candidates. */
  logprobTolerance: number;
}

/**
 * Served live, each adapter gives transformers' greedy output on the merged weights W + scale·B·A,
 * alone and in mixed batches; the base model beside them gives its own.
 */
export function loraParitySuite(options: LoraParityOptions): void {
  const fixtures = listLoraFixtures();
  const parity: ParityOptions = { backend: options.backend, logitTolerance: options.logitTolerance, greedy: options.greedy, acceptBf16ReferenceError: true };
  const params = (fixture: OracleFixture) => ({ ...GREEDY, maxTokens: fixture.oracle.max_new_tokens, logprobs: 20 });

  for (const fixture of fixtures) {
    test(`${fixture.name}: served live, it gives the merged model's greedy tokens and logprobs`, async () => {
      const llm = await loadWithAdapters([fixture], { backend: options.backend });
      try {
        const outputs = await llm.generate(fixture.merged.oracle.prompts, params(fixture.merged), { lora: fixture.name });
        outputs.forEach((output, i) => {
          assertGreedyMatches(output.outputs[0].tokenIds, fixture.merged, i, parity);
          assertLogprobsClose(output, fixture.merged, i, options.logprobTolerance);
        });
      } finally {
        await llm.close();
      }
    });
  }

  const variants: { name: string; config: EngineOptions }[] = [
    { name: 'one batch, a slot per adapter', config: { maxLoras: fixtures.length } },
    { name: 'one slot: adapters take turns, paged in and out', config: { maxLoras: 1 } },
    { name: 'eager decode steps (no CUDA graphs)', config: { maxLoras: fixtures.length, enforceEager: true } },
    { name: 'chunked prefill, 7 tokens per step', config: { maxLoras: fixtures.length, maxNumBatchedTokens: 7 } },
    { name: "each step's tokens read before the next is launched", config: { maxLoras: fixtures.length, asyncScheduling: false } },
    { name: 'forced preemption (12-block pool)', config: { maxLoras: fixtures.length, numKvBlocks: 12 } },
    { name: 'speculative n-gram drafts', config: { maxLoras: fixtures.length, speculative: { method: 'ngram', numSpeculativeTokens: 3, ngramMin: 1, ngramMax: 3 } } },
  ];
  for (const variant of variants) {
    test(`every adapter and the base model in one mixed batch each give their own output: ${variant.name}`, async () => {
      const llm = await loadWithAdapters(fixtures, { backend: options.backend, ...variant.config });
      try {
        const base = fixtures[0].base;
        // Every prompt once per adapter and once without, all submitted before the first step.
        const runs = [
          ...fixtures.map((f) => ({ oracle: f.merged, lora: f.name as string | undefined })),
          { oracle: base, lora: undefined },
        ].flatMap(({ oracle, lora }) => oracle.oracle.prompts.map((prompt, i) => ({ oracle, lora, prompt, i })));
        const outputs = await Promise.all(runs.map(({ oracle, lora, prompt }) => llm.generate(prompt, params(oracle), lora === undefined ? {} : { lora })));
        runs.forEach(({ oracle, i }, r) => assertGreedyMatches(outputs[r][0].outputs[0].tokenIds, oracle, i, parity));
        const stats = llm.stats();
        assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks, 'every KV block is free once all requests finished');
      } finally {
        await llm.close();
      }
    });
  }
}
