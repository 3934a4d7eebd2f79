import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { EngineOptions } from '../../src/config.ts';
import type { SpeculationStats } from '../../src/engine/outputs.ts';
import { LLM } from '../../src/engine/llm.ts';
import { loadModel } from '../../src/engine/load-engine.ts';
import { openModelFiles } from '../../src/checkpoint/model-files.ts';
import { createModel, mtpLayersIfRead, readModelArchitecture } from '../../src/models/registry.ts';
import { keepsSequenceState, kvBytesPerBlock, kvCacheGroups, kvStorage, type LayerKvSpec } from '../../src/step/kv-cache-layout.ts';
import { traceBackend } from '../../scripts/backend-comparison.ts';
import { promptsPrefill } from './prompts-prefill.ts';
import { unexcusedBySelectionNearTies, unexcusedGreedyDepartures, type GreedyDeparture } from './selection-near-tie.ts';
import { listOracleFixtures, maxAbsDiff, type OracleFixture } from './oracle-fixtures.ts';

export interface ParityOptions {
  backend: 'cpu' | 'cuda';
  /**
   * Largest |logit - transformers' logit| accepted, as a fraction of the standard deviation of
   * transformers' logits for the prompt: a bf16 backend's rounding error grows with the logits'
   * scale, which varies threefold among the fixtures (Gemma's scaled embeddings and norms).
   */
  logitTolerance: number;
  /**
   * For a bf16 backend: also accept, per prompt, as large an error as transformers' own when it runs
   * the checkpoint in bfloat16 (oracle.json's bf16_max_abs_dlogit). Some fixtures are drawn to be
   * ill-conditioned (Gemma 2's caps bend large values): there transformers in bf16 lands 0.74 away
   * from its float32 logits, and no bf16 engine can be held to less. Where the oracle also has that
   * run's logits and greedy path (bf16_last_logits, bf16_greedy), logits within `logitTolerance` of
   * its logits are accepted too, and a greedy path that leaves transformers' float32 one where its
   * bf16 one does, with the same token: rounding flipped the near-tie it flipped (an MoE expert, an
   * index top-k position; DeepSeek-V3.2's fixture holds such ties closer than bf16 resolves).
   * Keel rounds at other points than transformers does, so it flips other near-ties: logits no
   * further from transformers' float32 ones than the CPU backend's are when it rounds weights and
   * activations to bf16 as the CUDA backend stores them (its bf16 twin), plus the tolerance, are
   * accepted too. The twin shows what bf16 at Keel's rounding points costs the prompt; a kernel that
   * adds error of its own beyond the tolerance still fails. Past the twin, a prompt whose float32
   * run made a discrete choice within SELECTION_NEAR_TIE is excused, at most half the prompts
   * (selection-near-tie.ts): the backend's rounding flipped a choice the twin's did not.
   */
  acceptBf16ReferenceError?: boolean;
  /**
   * `exact`: every greedy token equals transformers'. `top-candidates` (for bf16 backends, whose
   * rounding can flip a near-tie): tokens are equal up to the first difference, and there Keel's
   * token must be one transformers nearly picked, its logprob within twice the logit tolerance of
   * the best (both logits may be off by the tolerance, in opposite directions); later tokens follow
   * another context and are not compared.
   */
  greedy: 'exact' | 'top-candidates';
  /** Names of the engine variants to run (default: all of them). */
  variants?: readonly string[];
  /**
   * Whether the small-pool variants assert that they did (or, a window freeing blocks, did not)
   * preempt: true for the committed fixtures, whose prompts and windows the pools are sized for;
   * false for drawn configs (tools/oracle/config_fuzz.py), whose windows the sizes do not know.
   */
  checkPreemption?: boolean;
}

/**
 * Engine configurations that must not change a single greedy token. `preemption`: whether the
 * pool is small enough to force preemption: 'always', or 'unless-windowed' for a pool that only a
 * model whose every layer slides a window fits without (its blocks behind the window are freed),
 * 'unless-sliding' for one that a model with any sliding layer fits without (its sliding KV groups
 * free their blocks: the same memory holds more of its tokens), or 'windowed' for a pool small
 * enough to force even a model whose every layer slides to preempt.
 */
interface EngineVariant {
  name: string;
  /** The engine options, or a function of the fixture's directory giving them. */
  config: EngineOptions | ((fixtureDir: string) => EngineOptions);
  preemption?: 'unless-windowed' | 'unless-sliding' | 'windowed';
  /** The fixture is its own draft model: every draft must be accepted (where logits are exact). */
  selfDraft?: true;
  /** Drafts by the checkpoint's own multi-token prediction layers: run on fixtures that hold them. */
  needsMtp?: true;
}

/** n-gram drafts that even short, repetitive continuations propose often, and reject often. */
const NGRAM: EngineOptions['speculative'] = { method: 'ngram', numSpeculativeTokens: 4, ngramMin: 1, ngramMax: 3 };
/** Chains from the checkpoint's MTP layers: random ones, so most drafts are rejected and rewound. */
const MTP: EngineOptions['speculative'] = { method: 'mtp', numSpeculativeTokens: 3 };

const ENGINE_VARIANTS: EngineVariant[] = [
  { name: 'all prompts in one batch', config: {} },
  { name: 'eager decode steps (no CUDA graphs)', config: { enforceEager: true } },
  { name: 'each step\'s tokens read before the next is launched', config: { asyncScheduling: false } },
  { name: 'prefix caching off', config: { enablePrefixCaching: false } },
  { name: 'chunked prefill, 1 token per step', config: { maxNumBatchedTokens: 1 } },
  { name: 'chunked prefill, 7 tokens per step', config: { maxNumBatchedTokens: 7 } },
  { name: 'chunked prefill, 64 tokens per step', config: { maxNumBatchedTokens: 64 } },
  { name: 'block size 4 with 7-token chunks', config: { blockSize: 4, maxNumBatchedTokens: 7 } },
  // The four prompts need 15 blocks of 16 tokens together; 8 forces preemption by recompute
  // unless blocks behind a sliding window are freed.
  { name: 'forced preemption (8-block pool)', config: { numKvBlocks: 8 }, preemption: 'unless-sliding' },
  // Four 16-token blocks: a windowed model's sequences each keep two or three, so they must take turns.
  { name: 'sliding window: forced preemption (4-block pool, 16-token chunks)', config: { numKvBlocks: 4, maxNumBatchedTokens: 16 }, preemption: 'windowed' },
  // Speculative decoding must not change a greedy token either (test/speculative-decoding.test.ts has more).
  // Every decoder layer's weights streamed from host memory through two sets of device buffers.
  { name: 'weight offload: every decoder layer streamed from host memory', config: { cpuOffloadGb: 64 } },
  { name: 'speculative n-gram drafts', config: { speculative: NGRAM } },
  { name: 'speculative n-gram drafts, block size 4 with 7-token chunks', config: { speculative: NGRAM, blockSize: 4, maxNumBatchedTokens: 7 } },
  // Sequences with drafts finish in fewer steps, and drop their drafts before preempting anyone:
  // 6 blocks leave the first three prompts no room to grow at all.
  { name: 'speculative n-gram drafts, forced preemption (6-block pool)', config: { speculative: NGRAM, numKvBlocks: 6 }, preemption: 'unless-windowed' },
  { name: 'speculative self-draft', config: (dir) => ({ speculative: { model: dir, numSpeculativeTokens: 3 } }), selfDraft: true },
  {
    name: 'speculative self-draft, block size 4 with 7-token chunks',
    config: (dir) => ({ speculative: { model: dir, numSpeculativeTokens: 3 }, blockSize: 4, maxNumBatchedTokens: 7 }),
    selfDraft: true,
  },
  {
    name: 'speculative self-draft, forced preemption (6-block pool)',
    config: (dir) => ({ speculative: { model: dir, numSpeculativeTokens: 3 }, numKvBlocks: 6 }),
    preemption: 'unless-windowed',
    selfDraft: true,
  },
  { name: 'speculative MTP chain', config: { speculative: MTP }, needsMtp: true },
  { name: 'speculative MTP chain, block size 4 with 7-token chunks', config: { speculative: MTP, blockSize: 4, maxNumBatchedTokens: 7 }, needsMtp: true },
];

/** transformers' logits and greedy continuations, reproduced by every fixture on one backend. */
export function transformersParitySuite(options: ParityOptions): void {
  // KEEL_PARITY_FIXTURES (a regular expression over fixture names) splits the suite over processes.
  const only = process.env.KEEL_PARITY_FIXTURES;
  const fixtures = listOracleFixtures().filter((f) => only === undefined || new RegExp(only).test(f.name));
  test('oracle fixtures are present', () => assert.ok(fixtures.length >= (only === undefined ? 10 : 1), `found ${fixtures.length} fixtures`));
  for (const fixture of fixtures) {
    describe(`${fixture.name} (${fixture.oracle.description})`, () => {
      for (const check of parityChecks(fixture, options)) test(check.name, check.run);
    });
  }
}

/** One check of a fixture against transformers: what the suite names a test. */
export interface ParityCheck {
  name: string;
  run: () => Promise<void>;
}

/**
 * Every check the parity suite makes of one fixture, in order: the batched logits, then the greedy
 * continuations under each engine variant that applies to it, then the prefix-cache reruns.
 * scripts/oracle-check.ts runs the same list on checkpoints drawn by tools/oracle/config_fuzz.py.
 */
export function parityChecks(fixture: OracleFixture, options: ParityOptions): ParityCheck[] {
  const checks: ParityCheck[] = [{ name: 'last-token logits of every prompt, batched together', run: () => checkLogits(fixture, options) }];
  const windowed = fixtureSlides(fixture, 'every');
  const sliding = fixtureSlides(fixture, 'some');
  // A model keeping a recurrent state per sequence (Gated DeltaNet) rewinds its state past
  // rejected drafts from a snapshot, which a draft model's own state would need too, so it takes
  // n-gram and its own MTP drafts alone; its prefix hits restore a state kept at a block boundary
  // (state checkpoints), which the host tier of the prefix cache does not keep (load-engine.ts,
  // withSequenceStates).
  const recurrent = fixtureKeepsSequenceState(fixture);
  const mtp = fixtureHasMtpLayers(fixture);
  for (const variant of ENGINE_VARIANTS.filter((v) => !options.variants || options.variants.includes(v.name))) {
    if (variant.preemption === 'windowed' && !windowed) continue;
    if (variant.needsMtp && !mtp) continue;
    const { speculative } = resolvedConfig(variant, fixture);
    if (recurrent && speculative != null && speculative.method !== 'ngram' && speculative.method !== 'mtp') continue;
    checks.push({
      name: `greedy continuation: ${variant.name}`,
      run: async () => {
        const config = resolvedConfig(variant, fixture);
        const fitsAnyway = (variant.preemption === 'unless-windowed' && windowed) || (variant.preemption === 'unless-sliding' && sliding);
        const expectPreemption = options.checkPreemption === false ? null : variant.preemption !== undefined && !fitsAnyway;
        const speculation = await checkGreedy(fixture, options, config, expectPreemption);
        if (variant.selfDraft && options.greedy === 'exact') assert.equal(speculation?.acceptanceRate, 1, 'a model drafting for itself has every draft accepted');
      },
    });
  }
  checks.push({ name: 'greedy continuation: n = 2, the second completion forked after the prefill (block size 4)', run: () => checkForkedGreedy(fixture, options) });
  checks.push(
    { name: 'greedy continuation: second run served from the prefix cache', run: () => checkPrefixCacheRerun(fixture, options, {}) },
    { name: 'greedy continuation: second run served from the prefix cache, with n-gram drafts', run: () => checkPrefixCacheRerun(fixture, options, { speculative: NGRAM }) },
  );
  if (!recurrent) checks.push({ name: 'greedy continuation: second run loaded from the host tier of the prefix cache', run: () => checkHostTierRerun(fixture, options) });
  return checks;
}

function resolvedConfig(variant: EngineVariant, fixture: OracleFixture): EngineOptions {
  return typeof variant.config === 'function' ? variant.config(fixture.dir) : variant.config;
}

/** What each layer of the fixture's model keeps in the KV cache. */
export function fixtureKvLayers(fixture: OracleFixture): readonly LayerKvSpec[] {
  const architecture = readModelArchitecture(fixture.dir);
  return createModel(architecture, architecture.config.contextLength).kvLayers;
}

/** Whether the fixture's checkpoint holds multi-token prediction layers that Keel's MTP head reads. */
export function fixtureHasMtpLayers(fixture: OracleFixture): boolean {
  const layers = mtpLayersIfRead(readModelArchitecture(fixture.dir).config);
  if (layers === null || layers.count < 1) return false;
  const names = openModelFiles(fixture.dir).tensorNames() ?? [];
  return names.some((name) => name.startsWith(`${layers.layout.prefix}.`));
}

/** Whether the fixture's model keeps a state per sequence (a `SequenceStateSpec` layer). */
export function fixtureKeepsSequenceState(fixture: OracleFixture): boolean {
  return keepsSequenceState(fixtureKvLayers(fixture));
}

/**
 * The blocks that hold as much memory as `numBlocks` blocks of a cache with one block table: a
 * model mixing sliding and full layers keeps a block table per KV group, and its blocks each hold
 * one group's layers only (kvStorage), so the variants' small pools are sized in memory, not blocks
 * (whole blocks: groups of layers of unequal sizes, MiMo-V2-Flash's, need not give a whole ratio).
 */
function sameMemoryKvBlocks(fixture: OracleFixture, numBlocks: number, blockSize = 16, holdLongestPrompt = true): number {
  const layers = fixtureKvLayers(fixture);
  const ratio = kvBytesPerBlock(layers, 1, 4) / kvBytesPerBlock(layers, 1, 4, 'auto', kvCacheGroups(layers, null).groupOf);
  const sameMemory = Math.floor(numBlocks * ratio);
  return holdLongestPrompt ? Math.max(sameMemory, longestPromptBlocks(fixture, blockSize)) : sameMemory;
}

/**
 * Where the KV groups' layers differ in shape they share no pools (kvStorage: MiMo-V2-Flash's full
 * and sliding layers, of different KV heads), so a block serves one group and the same memory as a
 * small pool of one block table may not hold the longest prompt: then the blocks it takes while it
 * prefills in one step, every group caching it whole; else 0.
 */
function longestPromptBlocks(fixture: OracleFixture, blockSize: number): number {
  const layers = fixtureKvLayers(fixture);
  const { retentions, groupOf } = kvCacheGroups(layers, null);
  const largestGroup = Math.max(...retentions.map((_, g) => groupOf.filter((of) => of === g).length));
  if (kvStorage(layers, groupOf).pools.length <= largestGroup) return 0;
  const longest = Math.max(...fixture.oracle.prompts.map((p) => p.length));
  return retentions.length * Math.ceil(longest / blockSize);
}

/** Whether every (or some) layer of the fixture's model reads only a window of recent positions. */
export function fixtureSlides(fixture: OracleFixture, layers: 'every' | 'some'): boolean {
  const { retentions } = kvCacheGroups(fixtureKvLayers(fixture), null);
  return layers === 'every' ? retentions.every((retention) => retention !== null) : retentions.some((retention) => retention !== null);
}

export async function checkLogits(fixture: OracleFixture, options: ParityOptions): Promise<void> {
  const blockSize = 16;
  const loaded = await loadModel({ model: fixture.dir, backend: options.backend, showProgress: false, blockSize });
  try {
    const prompts = fixture.oracle.prompts;
    const { batch, numBlocks, stateSlots } = promptsPrefill(prompts, blockSize, loaded.model);
    const cache = loaded.backend.createKvCache({ numBlocks, blockSize, layers: loaded.model.kvLayers, stateSlots });
    const logits = loaded.backend.toHost(loaded.model.forward(loaded.backend, loaded.backend.beginStep(batch), cache));
    const vocab = loaded.modelConfig.vocabSize;
    const rows = prompts.map((_, i) => logits.subarray(i * vocab, (i + 1) * vocab));
    let failures = rows.map((row, i) => logitsFailure(row, fixture, i, options)).filter((f) => f !== null);
    if (failures.length > 0 && options.acceptBf16ReferenceError) {
      const twin = await traceBackend(fixture.dir, 'cpu-bf16', prompts, { ops: false, blockSize });
      const failing = new Map(rows.map((row, i) => [i, logitsFailure(row, fixture, i, options, twin.logits[i])] as const).filter((f): f is [number, string] => f[1] !== null));
      failures = await unexcusedBySelectionNearTies(fixture.dir, prompts, failing, { blockSize });
    }
    assert.ok(failures.length === 0, failures.join('; '));
  } finally {
    loaded.backend.dispose();
  }
}

const GREEDY = { temperature: 0, ignoreEos: true } as const;

/**
 * Enough KV blocks for any fixture's four prompts, and no more: on CUDA the default pool takes 90 %
 * of free GPU memory, which a test process must not hold (nor leave held if it is killed).
 */
const TEST_KV_BLOCKS = 256;

/**
 * Checks the greedy continuations, and whether a request was preempted against `expectPreemption`
 * (null: not checked); returns the engine's speculative decoding figures.
 */
export async function checkGreedy(fixture: OracleFixture, options: ParityOptions, config: EngineOptions, expectPreemption: boolean | null): Promise<SpeculationStats | null> {
  const numKvBlocks = sameMemoryKvBlocks(fixture, config.numKvBlocks ?? TEST_KV_BLOCKS, config.blockSize);
  // A pool raised to hold the longest prompt (longestPromptBlocks) need not force preemption any more.
  const preemptionChecked = numKvBlocks === sameMemoryKvBlocks(fixture, config.numKvBlocks ?? TEST_KV_BLOCKS, config.blockSize, false) ? expectPreemption : null;
  const llm = await LLM.load({ model: fixture.dir, backend: options.backend, showProgress: false, ...config, numKvBlocks });
  try {
    const outputs = await llm.generate(fixture.oracle.prompts, { ...GREEDY, maxTokens: fixture.oracle.max_new_tokens });
    await assertGreedyContinuations(firstCompletions(outputs), fixture, options);
    const preempted = outputs.some((o) => o.metrics.numPreemptions > 0);
    if (preemptionChecked === true) assert.ok(preempted, 'the pool was meant to be too small for the batch, but no request was preempted');
    else if (preemptionChecked === false && config.numKvBlocks !== undefined) assert.ok(!preempted, 'blocks behind the sliding window were meant to be freed, but a request was preempted');
    const stats = llm.stats();
    assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks, 'every KV block is free once all requests finished');
    if (config.preemptionMode === 'swap') {
      assert.ok(stats.numSwapsTotal > 0, 'a context longer than a step\'s token budget was meant to be swapped out');
      assert.equal(stats.numFreeSwapBlocks, stats.numSwapBlocks, 'every swap block is free once all requests finished');
    }
    if (config.speculative) assertSpeculated(stats.speculation);
    return stats.speculation;
  } finally {
    await llm.close();
  }
}

/**
 * n = 2 under greedy sampling: the second completion forks from the first after the prefill,
 * sharing its blocks (4-token blocks, so that the prompt's last, partly filled one is copied on
 * write) and, with state layers, a copy of its state; both must continue as transformers does.
 */
export async function checkForkedGreedy(fixture: OracleFixture, options: ParityOptions): Promise<void> {
  const numKvBlocks = sameMemoryKvBlocks(fixture, 4 * TEST_KV_BLOCKS, 4);
  const llm = await LLM.load({ model: fixture.dir, backend: options.backend, showProgress: false, blockSize: 4, numKvBlocks });
  try {
    const outputs = await llm.generate(fixture.oracle.prompts, { ...GREEDY, n: 2, maxTokens: fixture.oracle.max_new_tokens });
    await assertGreedyContinuations(outputs.flatMap((output, prompt) => output.outputs.map((o) => ({ prompt, tokens: o.tokenIds }))), fixture, options);
    const stats = llm.stats();
    assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks, 'every KV block is free once all requests finished');
  } finally {
    await llm.close();
  }
}

/** Drafts were run, so that the equality above says something about them. */
function assertSpeculated(speculation: SpeculationStats | null): void {
  assert.ok(speculation !== null && speculation.numDraftTokens > 0, `no draft was verified: ${JSON.stringify(speculation)}`);
}

export async function checkPrefixCacheRerun(fixture: OracleFixture, options: ParityOptions, config: EngineOptions): Promise<void> {
  // Small blocks, so that even the shipped models' short prompts fill a block that can be hit.
  const llm = await LLM.load({ model: fixture.dir, backend: options.backend, showProgress: false, blockSize: 4, ...config, numKvBlocks: sameMemoryKvBlocks(fixture, config.numKvBlocks ?? TEST_KV_BLOCKS, 4) });
  try {
    const params = { ...GREEDY, maxTokens: fixture.oracle.max_new_tokens };
    await llm.generate(fixture.oracle.prompts, params);
    const again = await llm.generate(fixture.oracle.prompts, params);
    await assertGreedyContinuations(firstCompletions(again), fixture, options);
    assert.ok(
      again.some((o) => o.metrics.numCachedTokens > 0),
      'the second run should have been served from the prefix cache',
    );
    if (config.speculative) assertSpeculated(llm.stats().speculation);
  } finally {
    await llm.close();
  }
}

/**
 * The prompts run, then other prompts evict all their blocks from a small device pool into the
 * host tier (`kvOffloadGb`), then the prompts run again: loaded from the host, with the same tokens.
 * `config` adds to the engine's settings (a parallel run's sizes).
 */
export async function checkHostTierRerun(fixture: OracleFixture, options: ParityOptions, config: EngineOptions = {}): Promise<void> {
  const numKvBlocks = sameMemoryKvBlocks(fixture, 64, 4);
  const llm = await LLM.load({ model: fixture.dir, backend: options.backend, showProgress: false, blockSize: 4, numKvBlocks, kvOffloadGb: 0.01, ...config });
  try {
    const params = { ...GREEDY, maxTokens: fixture.oracle.max_new_tokens };
    const { prompts } = fixture.oracle;
    await llm.generate(prompts, params);
    // Each takes a fresh chain of blocks (its first token differs), least recently used first.
    const longest = prompts.reduce((a, b) => (b.length > a.length ? b : a));
    for (let k = 0; k * longest.length < 2 * numKvBlocks * 4; k++) await llm.generate([[prompts[k % prompts.length][0], ...longest]], { ...GREEDY, maxTokens: 1 });
    // The fillers repeat after four, so with several KV groups (blocks filling faster) a repeat may load from the host too.
    const hostBefore = llm.stats().hostCachedPromptTokensTotal;
    const again = await llm.generate(prompts, params);
    await assertGreedyContinuations(firstCompletions(again), fixture, options);
    assert.ok(again.some((o) => o.metrics.numHostCachedTokens > 0), 'the second run should have loaded blocks from the host tier');
    assert.equal(llm.stats().hostCachedPromptTokensTotal - hostBefore, again.reduce((n, o) => n + o.metrics.numHostCachedTokens, 0));
  } finally {
    await llm.close();
  }
}

/**
 * Why `row`, the prompt's last-token logits, is not accepted, or null: it must lie within the
 * logit tolerance of transformers' float32 logits, or (options.acceptBf16ReferenceError, where the
 * oracle has them) within options.logitTolerance standard deviations of its bfloat16 run's, or
 * (given `twinRow`, the bf16 twin's logits for the prompt) no further from the float32 logits than
 * the twin's, plus the tolerance.
 */
export function logitsFailure(row: ArrayLike<number>, fixture: OracleFixture, prompt: number, options: ParityOptions, twinRow?: ArrayLike<number>): string | null {
  const diff = maxAbsDiff(row, fixture.oracle.last_logits[prompt]);
  const tolerance = logitTolerance(fixture, prompt, options);
  if (diff <= tolerance) return null;
  const twinDiff = options.acceptBf16ReferenceError && twinRow !== undefined ? maxAbsDiff(twinRow, fixture.oracle.last_logits[prompt]) : undefined;
  if (twinDiff !== undefined && diff <= twinDiff + tolerance) return null;
  const twinNote = twinDiff === undefined ? '' : `, and beyond the bf16 twin's ${twinDiff.toExponential(2)} + ${tolerance.toExponential(2)}`;
  const bf16Logits = options.acceptBf16ReferenceError ? fixture.oracle.bf16_last_logits?.[prompt] : undefined;
  if (bf16Logits === undefined) return `prompt ${prompt}: max |Δlogit| = ${diff.toExponential(2)} > ${tolerance.toExponential(2)}${twinNote}`;
  const bf16Diff = maxAbsDiff(row, bf16Logits);
  const bf16Tolerance = options.logitTolerance * standardDeviation(fixture.oracle.last_logits[prompt]);
  if (bf16Diff <= bf16Tolerance) return null;
  return `prompt ${prompt}: max |Δlogit| = ${diff.toExponential(2)} > ${tolerance.toExponential(2)}, and ${bf16Diff.toExponential(2)} > ${bf16Tolerance.toExponential(2)} from transformers' bf16 logits${twinNote}`;
}

function standardDeviation(values: readonly number[]): number {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
}

/** The largest logit difference accepted for the prompt: options.logitTolerance standard deviations of its reference logits, or transformers' own bf16 error if larger and accepted. */
export function logitTolerance(fixture: OracleFixture, prompt: number, options: ParityOptions): number {
  const bf16 = options.acceptBf16ReferenceError ? (fixture.oracle.bf16_max_abs_dlogit?.[prompt] ?? 0) : 0;
  return Math.max(options.logitTolerance * standardDeviation(fixture.oracle.last_logits[prompt]), bf16);
}

export function assertGreedyMatches(actual: number[], fixture: OracleFixture, prompt: number, options: ParityOptions): void {
  const departure = greedyDeparture(actual, fixture, prompt, options);
  assert.ok(departure === null, departure?.message);
}

/**
 * Every run's greedy tokens match transformers' (greedyDeparture). For a bf16 backend, a prompt
 * that departs for the token Keel's bf16 twin picks on the same path is excused, as is one whose
 * float32 run made a discrete choice within a near-tie at the departing step, at most half the
 * prompts (selection-near-tie.ts): rounding may flip an expert there as it may in the prompt, which
 * the logits check excuses alike.
 */
export async function assertGreedyContinuations(runs: readonly { prompt: number; tokens: number[] }[], fixture: OracleFixture, options: ParityOptions): Promise<void> {
  const departures = runs.map((r) => greedyDeparture(r.tokens, fixture, r.prompt, options)).filter((d) => d !== null);
  const unexcused = options.acceptBf16ReferenceError ? await unexcusedGreedyDepartures(fixture.dir, departures, fixture.oracle.prompts.length) : departures.map((d) => d.message);
  assert.ok(unexcused.length === 0, unexcused.join('; '));
}

/** Each prompt's first (and only) completion. */
function firstCompletions(outputs: readonly { outputs: readonly { tokenIds: number[] }[] }[]): { prompt: number; tokens: number[] }[] {
  return outputs.map((output, prompt) => ({ prompt, tokens: output.outputs[0].tokenIds }));
}

/**
 * Where `actual` leaves transformers' greedy path beyond what `options.greedy` accepts, or null.
 * `exact`: any difference. `top-candidates`: a first differing token that transformers in bf16
 * chose too, or that lies within twice the logit tolerance of transformers' best there, is accepted.
 */
function greedyDeparture(actual: number[], fixture: OracleFixture, prompt: number, options: ParityOptions): GreedyDeparture | null {
  const expected = fixture.oracle.greedy[prompt];
  const promptTokens = fixture.oracle.prompts[prompt];
  const departure = (step: number, message: string, excusable = true): GreedyDeparture => ({
    prompt,
    path: [...promptTokens, ...expected.slice(0, step)],
    token: actual.length === expected.length ? actual[step] : null,
    message,
    excusable,
  });
  if (actual.length !== expected.length) return departure(0, `prompt ${prompt}: ${actual.length} tokens, transformers ${expected.length}`, false);
  const step = actual.findIndex((token, i) => token !== expected[i]);
  if (step === -1) return null;
  if (options.greedy === 'exact') return departure(step, `prompt ${prompt}, step ${step}: token ${actual[step]}, transformers ${expected[step]} (${JSON.stringify(actual)} against ${JSON.stringify(expected)})`);
  // transformers in bf16 left the float32 path here too, for the same token.
  const bf16 = options.acceptBf16ReferenceError ? fixture.oracle.bf16_greedy?.[prompt] : undefined;
  if (bf16 !== undefined && bf16.slice(0, step + 1).every((token, i) => token === actual[i])) return null;
  const candidates = fixture.oracle.greedy_top_logprobs?.[prompt]?.[step];
  if (!candidates) return departure(step, 'oracle.json has no greedy_top_logprobs: regenerate it with tools/oracle/make_fixtures.py', false);
  const allowance = 2 * logitTolerance(fixture, prompt, options);
  const picked = candidates.find(([tokenId]) => tokenId === actual[step]);
  if (picked !== undefined && picked[1] >= candidates[0][1] - allowance) return null;
  return departure(step, `prompt ${prompt}, step ${step}: token ${actual[step]} is not within ${allowance.toFixed(3)} nats of transformers' best among its candidates ${JSON.stringify(candidates)}`);
}
