import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend, SampledTokens, StepInputs, Tensor } from '../backend/backend.ts';
import { openCheckpoint } from '../checkpoint/checkpoint.ts';
import type { DraftHead } from '../models/draft-head.ts';
import { FIXTURES_DIR } from '../../test/helpers/oracle-fixtures.ts';
import { backendView } from '../../test/helpers/backend-view.ts';
import { recordingBackend, type Replayed } from '../../test/helpers/graph-recording-backend.ts';
import { dirname, join } from 'node:path';
import { BlockPool } from './block-pool.ts';
import { loadEagleHead, loadMtpHead } from './load-draft-head.ts';
import { HeadProposer } from './head-proposer.ts';
import { KvCacheManager } from './kv-cache-manager.ts';
import { loadModel, DEFAULT_MODEL_DIR } from './load-engine.ts';
import { GRAPH_BATCH_SIZES } from './graph-batch.ts';
import { ModelRunner, type DraftModel, type DrawSite, type StepDraws } from './model-runner.ts';
import { drawFor, type Draw } from '../sampling/draw.ts';
import { forkStream } from '../sampling/rng.ts';
import { DEFAULT_SAMPLING_PARAMS } from '../sampling/sampling-params.ts';
import { Scheduler } from './scheduler.ts';
import { stateSlotLayout } from './state-slots.ts';
import { Sequence, UNPROPOSED_DRAFT } from './sequence.ts';
import type { BatchDescription } from '../step/batch.ts';

const BLOCK_SIZE = 4;
const NUM_BLOCKS = 64;

function greedyDraw(site: DrawSite): Draw {
  const context = { rng: forkStream(0, 0), penaltyTokens: null, numOutputTokens: 0, draftHistory: null, eosTokenIds: [], allowedTokens: null, logitBias: null, bannedTokenIds: [] };
  return drawFor({ ...DEFAULT_SAMPLING_PARAMS, temperature: 0 }, { ...context, ...site });
}

/** Greedy tokens of each prompt, `steps` engine-like steps at a time through one runner. */
function greedyRun(backend: Backend, model: Awaited<ReturnType<typeof loadModel>>, prompts: number[][], steps: number, graphs: boolean): number[][] {
  const cache = backend.createKvCache({ numBlocks: NUM_BLOCKS + 1, blockSize: BLOCK_SIZE, layers: model.model.kvLayers });
  const kv = new KvCacheManager(new BlockPool(NUM_BLOCKS, true), { blockSize: BLOCK_SIZE, enablePrefixCaching: true, groups: [null], nullBlock: NUM_BLOCKS });
  const scheduler = new Scheduler({ maxNumSeqs: 8, maxNumBatchedTokens: 256, blockSize: BLOCK_SIZE, maxModelLen: 256 }, kv);
  const runner = new ModelRunner(backend, model.model, cache, BLOCK_SIZE, graphs ? { maxBatchSize: 8, scratchBlock: NUM_BLOCKS, scratchStateSlot: null } : null);
  const seqs = prompts.map((p, i) => new Sequence(`r${i}`, p));
  for (const seq of seqs) scheduler.add(seq);
  for (let i = 0; i < steps; i++) {
    const output = scheduler.schedule();
    const result = runner.execute(output, { drawsFor: (_s, site) => [greedyDraw(site)], draftDraw: () => assert.fail('no draft model'), draftDrawReadsDrafts: () => assert.fail('no draft model'), verificationReadsDrafts: () => assert.fail('no drafting head'), promptTopLogprobs: () => 0 });
    scheduler.onStepComplete(output);
    result.samplingRows.forEach((s, row) => output.scheduled[s].seq.appendToken(result.read().tokenIds[result.firstDraw[row]]));
  }
  return seqs.map((s) => s.tokenIds.slice(s.numPromptTokens));
}

test('padded graph decode steps produce the tokens of eager steps, and pad to recorded shapes', async () => {
  const model = await loadModel({ model: DEFAULT_MODEL_DIR, backend: 'cpu', showProgress: false });
  const prompts = [[5, 9, 2, 77, 31], [8, 8, 100, 3, 41, 2, 9, 19, 4], [300]];
  const eager = greedyRun(model.backend, model, prompts, 12, false);
  const replayed: Replayed[] = [];
  const graphed = greedyRun(recordingBackend(model.backend, replayed), model, prompts, 12, true);
  assert.deepEqual(graphed, eager);
  // The first step prefills; the other 11 decode three sequences, padded to 4 rows.
  assert.equal(replayed.length, 11);
  for (const r of replayed) {
    assert.equal(r.numSeqs, 4);
    assert.ok(GRAPH_BATCH_SIZES.includes(r.numSeqs));
    assert.equal(r.logitsRows, 4, 'padding rows get logits too, so the shape stays put');
    assert.equal(r.width & (r.width - 1), 0, `block-table width ${r.width} is a power of two`);
  }
});

test('a row drawn n times gets n consecutive draws of its own logits; a row nobody waits for, none', async () => {
  const model = await loadModel({ model: DEFAULT_MODEL_DIR, backend: 'cpu', showProgress: false });
  const run = (drawsPerRow: number[]) => {
    const cache = model.backend.createKvCache({ numBlocks: 9, blockSize: BLOCK_SIZE, layers: model.model.kvLayers });
    const kv = new KvCacheManager(new BlockPool(8, false), { blockSize: BLOCK_SIZE, enablePrefixCaching: false, groups: [null], nullBlock: 8 });
    const scheduler = new Scheduler({ maxNumSeqs: 8, maxNumBatchedTokens: 64, blockSize: BLOCK_SIZE, maxModelLen: 32 }, kv);
    const runner = new ModelRunner(model.backend, model.model, cache, BLOCK_SIZE);
    for (const [i, prompt] of [[1, 2, 3], [4, 5], [6]].entries()) scheduler.add(new Sequence(`s${i}`, prompt));
    const result = runner.execute(scheduler.schedule(), { drawsFor: (s, site) => Array.from({ length: drawsPerRow[s] }, () => greedyDraw(site)), draftDraw: () => assert.fail('no draft model'), draftDrawReadsDrafts: () => assert.fail('no draft model'), verificationReadsDrafts: () => assert.fail('no drafting head'), promptTopLogprobs: () => 0 });
    return { firstDraw: result.firstDraw, tokens: [...result.read().tokenIds] };
  };
  const single = run([1, 1, 1]);
  assert.deepEqual(single.firstDraw, [0, 1, 2]);
  const forked = run([2, 0, 3]);
  assert.deepEqual(forked.firstDraw, [0, 2, 2]);
  const [a, , c] = single.tokens;
  assert.deepEqual(forked.tokens, [a, a, c, c, c]);
});

test('rotary rows come from the model\'s hook with each sequence\'s original prompt length, also when a preempted sequence recomputes', async () => {
  const model = await loadModel({ model: DEFAULT_MODEL_DIR, backend: 'cpu', showProgress: false });
  const batches: { positions: number[]; rotaryRows: number[] }[] = [];
  const backend = Object.create(model.backend) as Backend;
  backend.beginStep = (batch) => {
    batches.push({ positions: [...batch.positions], rotaryRows: [...batch.rotaryRows] });
    return model.backend.beginStep(batch);
  };
  // A row that depends on the prompt length, as LongRoPE's does; small enough for the table.
  const hooked = Object.assign(Object.create(model.model) as typeof model.model, { rotaryRow: (position: number, promptLength: number) => position + promptLength });
  const cache = backend.createKvCache({ numBlocks: 9, blockSize: BLOCK_SIZE, layers: hooked.kvLayers });
  const kv = new KvCacheManager(new BlockPool(8, false), { blockSize: BLOCK_SIZE, enablePrefixCaching: false, groups: [null], nullBlock: 8 });
  const scheduler = new Scheduler({ maxNumSeqs: 8, maxNumBatchedTokens: 64, blockSize: BLOCK_SIZE, maxModelLen: 32 }, kv);
  const runner = new ModelRunner(backend, hooked, cache, BLOCK_SIZE);
  // The second sequence stands for one preempted after two tokens: all five run again, rotated by its 3-token prompt.
  const recomputed = new Sequence('recomputed', [7, 8, 9]);
  recomputed.appendToken(10);
  recomputed.appendToken(11);
  scheduler.add(new Sequence('fresh', [1, 2]));
  scheduler.add(recomputed);
  runner.execute(scheduler.schedule(), { drawsFor: (_s, site) => [greedyDraw(site)], draftDraw: () => assert.fail('no draft model'), draftDrawReadsDrafts: () => assert.fail('no draft model'), verificationReadsDrafts: () => assert.fail('no drafting head'), promptTopLogprobs: () => 0 });
  assert.deepEqual(batches, [{ positions: [0, 1, 0, 1, 2, 3, 4], rotaryRows: [2, 3, 3, 4, 5, 6, 7] }]);

  batches.length = 0;
  const NO_BLOCKS = { src: new Int32Array(0), dst: new Int32Array(0) };
  new ModelRunner(backend, model.model, cache, BLOCK_SIZE).execute(
    { scheduled: [{ seq: Object.assign(new Sequence('plain', [1, 2, 3]), { blockTables: [[0]] }), numNewTokens: 3 }], preempted: [], blockCopies: NO_BLOCKS, stateCopies: NO_BLOCKS, swapOut: NO_BLOCKS, swapIn: NO_BLOCKS, hostCache: { store: NO_BLOCKS, load: NO_BLOCKS }, numScheduledTokens: 3 },
    { drawsFor: () => [], draftDraw: () => assert.fail('no draft model'), draftDrawReadsDrafts: () => assert.fail('no draft model'), verificationReadsDrafts: () => assert.fail('no drafting head'), promptTopLogprobs: () => 0 },
  );
  assert.deepEqual(batches[0].rotaryRows, batches[0].positions, 'without the hook, rows are positions');
});

/**
 * Logs the backend's sampling passes ('sample') and the host's reads of them ('read'), and how
 * many of each step's tokens are read from the latest pass on the device (tokenSources).
 */
function countingBackend(backend: Backend, events: string[], deviceTokens: number[]): Backend {
  return backendView(backend, {
    sampleRows: (x: Tensor, draws: readonly Draw[]): SampledTokens => {
      events.push('sample');
      const sampled = backend.sampleRows(x, draws);
      return { read: () => (events.push('read'), sampled.read()) };
    },
    beginStep: (batch: BatchDescription): StepInputs => {
      deviceTokens.push(batch.tokenSources.filter((source) => source >= 0).length);
      return backend.beginStep(batch);
    },
  });
}

/** A runner over `model` drafting for itself from a cache of its own, its scheduler, and the prompts' sequences, added. */
function selfDrafting(backend: Backend, model: Awaited<ReturnType<typeof loadModel>>, prompts: number[][], graphs: boolean) {
  const layout = { numBlocks: NUM_BLOCKS + 1, blockSize: BLOCK_SIZE, layers: model.model.kvLayers };
  const draft: DraftModel = { model: model.model, cache: backend.createKvCache(layout) };
  const kv = new KvCacheManager(new BlockPool(NUM_BLOCKS, true), { blockSize: BLOCK_SIZE, enablePrefixCaching: false, groups: [null], nullBlock: NUM_BLOCKS });
  const scheduler = new Scheduler({ maxNumSeqs: 8, maxNumBatchedTokens: 256, blockSize: BLOCK_SIZE, maxModelLen: 256 }, kv);
  const runner = new ModelRunner(backend, model.model, backend.createKvCache(layout), BLOCK_SIZE, graphs ? { maxBatchSize: 8, scratchBlock: NUM_BLOCKS, scratchStateSlot: null } : null, { draft });
  const seqs = prompts.map((p, i) => new Sequence(`r${i}`, p));
  for (const seq of seqs) scheduler.add(seq);
  return { draft, scheduler, runner, seqs };
}

test('a draft model\'s proposal passes chain on the device, are read once, and replay its decode graphs', async () => {
  const model = await loadModel({ model: DEFAULT_MODEL_DIR, backend: 'cpu', showProgress: false });
  const prompts = [[5, 9, 2, 77, 31], [8, 8, 100, 3, 41, 2, 9, 19, 4], [300]];
  const K = 4;
  // Plain greedy decoding's tokens: the target drafting for itself proposes exactly these.
  const expected = greedyRun(model.backend, model, prompts, K + 2, false);
  for (const { graphs, readsDrafts } of [{ graphs: false, readsDrafts: false }, { graphs: true, readsDrafts: false }, { graphs: true, readsDrafts: true }]) {
    const label = `graphs ${graphs}, draws reading the drafts ${readsDrafts}`;
    const events: string[] = [];
    const deviceTokens: number[] = [];
    const replayed: Replayed[] = [];
    const counting = countingBackend(model.backend, events, deviceTokens);
    const backend = graphs ? recordingBackend(counting, replayed) : counting;
    const { draft, scheduler, runner, seqs } = selfDrafting(backend, model, prompts, graphs);
    const plainDraws: StepDraws = {
      drawsFor: (_s, site) => [greedyDraw(site)],
      draftDraw: (_s, _index, row) => greedyDraw({ row, pendingDraw: -1 }),
      draftDrawReadsDrafts: () => readsDrafts,
      verificationReadsDrafts: () => assert.fail('no drafting head'),
      promptTopLogprobs: () => 0,
    };
    // The prefill: every sequence gets its first token.
    const prefill = scheduler.schedule();
    const first = runner.execute(prefill, plainDraws);
    scheduler.onStepComplete(prefill);
    first.samplingRows.forEach((s, row) => prefill.scheduled[s].seq.appendToken(first.read().tokenIds[first.firstDraw[row]]));
    // Then K drafts each (the last sequence 2), proposed by the runner, all accepted.
    seqs.forEach((seq, i) => seq.appendDraftTokens(new Array<number>(i === 2 ? 2 : K).fill(UNPROPOSED_DRAFT)));
    events.length = 0;
    deviceTokens.length = 0;
    replayed.length = 0;
    const output = scheduler.schedule();
    assert.equal(output.scheduled.length, 3);
    const result = runner.execute(output, { ...plainDraws, drawsFor: (s, site) => Array.from({ length: output.scheduled[s].seq.numDraftTokens + 1 }, (_, r) => greedyDraw({ ...site, row: site.row + r })) });
    const drawn = result.read().tokenIds;
    seqs.forEach((seq, i) => {
      const drafts = Array.from({ length: seq.numDraftTokens }, (_, d) => seq.draftTokenId(d));
      assert.deepEqual(drafts, expected[i].slice(1, 1 + drafts.length), `${label}: sequence ${i}'s drafts are plain decoding's next tokens`);
      const row = result.samplingRows.indexOf(output.scheduled.findIndex((e) => e.seq === seq));
      assert.deepEqual([...drawn.subarray(result.firstDraw[row], result.firstDraw[row] + drafts.length)], drafts, `${label}: the target accepts every draft`);
    });
    // K proposal passes, then the target's sampling pass.
    const passes = readsDrafts ? Array.from({ length: K }, () => ['sample', 'read']).flat() : [...new Array<string>(K).fill('sample'), ...new Array<string>(K).fill('read')];
    assert.deepEqual(events, [...passes, 'sample', 'read'], `${label}: the host reads the drafts ${readsDrafts ? 'after each pass' : 'once, after the last pass'}`);
    // Passes of 3, 3, 2 and 2 sequences: 1.. read the token before them on the device, unless each pass was read.
    assert.deepEqual(deviceTokens.slice(0, K), readsDrafts ? [0, 0, 0, 0] : [0, 3, 2, 2], `${label}: tokens read where the pass before sampled them`);
    if (graphs) {
      const passGraphs = replayed.filter((r) => r.owner === draft);
      assert.equal(passGraphs.length, K, `${label}: every proposal pass replays the draft model's graph`);
      assert.deepEqual(passGraphs.map((r) => [r.numSeqs, r.logitsRows]), [[4, 4], [4, 4], [2, 2], [2, 2]], `${label}: padded to recorded batch sizes`);
    } else assert.equal(replayed.length, 0);
  }
});

test('a verification step whose sequences all verify K drafts replays a graph of K + 1 tokens a row, the draft model\'s catch-up too, and verifies what an eager step verifies', async () => {
  const model = await loadModel({ model: DEFAULT_MODEL_DIR, backend: 'cpu', showProgress: false });
  const prompts = [[5, 9, 2, 77, 31], [8, 8, 100, 3, 41, 2, 9, 19, 4], [300]];
  const K = 3;
  const run = (graphs: boolean) => {
    const replayed: Replayed[] = [];
    const backend = graphs ? recordingBackend(model.backend, replayed) : model.backend;
    const { draft, scheduler, runner, seqs } = selfDrafting(backend, model, prompts, graphs);
    const draws = (output: ReturnType<Scheduler['schedule']>): StepDraws => ({
      drawsFor: (s, site) => Array.from({ length: output.scheduled[s].seq.numDraftTokens + 1 }, (_, r) => greedyDraw({ ...site, row: site.row + r })),
      draftDraw: (_s, _index, row) => greedyDraw({ row, pendingDraw: -1 }),
      draftDrawReadsDrafts: () => false,
      verificationReadsDrafts: () => assert.fail('no drafting head'),
      promptTopLogprobs: () => 0,
    });
    const verified: number[][] = [];
    // The prefill, then two verification steps of K drafts each, all accepted (the target drafts for itself).
    for (let step = 0; step < 3; step++) {
      if (step > 0) seqs.forEach((seq) => seq.appendDraftTokens(new Array<number>(K).fill(UNPROPOSED_DRAFT)));
      const output = scheduler.schedule();
      replayed.length = 0;
      const result = runner.execute(output, draws(output));
      const tokens = result.read().tokenIds;
      const rows = result.samplingRows.map((s, row) => [...tokens.subarray(result.firstDraw[row], result.firstDraw[row] + output.scheduled[s].seq.numDraftTokens + 1)]);
      scheduler.onStepComplete(output);
      // Each accepted draft becomes a sampled token, then the token after them.
      result.samplingRows.forEach((s, row) => rows[row].forEach((token) => output.scheduled[s].seq.appendToken(token)));
      verified.push(...rows);
      if (graphs && step > 0) {
        // K proposal passes of 3 sequences padded to 4, the draft model's catch-up over the chunks, then the target's verification.
        assert.deepEqual(replayed.map((r) => [r.owner === runner ? 'target' : 'draft', r.numSeqs, r.logitsRows]), [...new Array(K).fill(['draft', 4, 4]), ['draft', 4, 4 * (K + 1)], ['target', 4, 4 * (K + 1)]]);
      }
    }
    return verified;
  };
  const eager = run(false);
  assert.deepEqual(run(true), eager);
  assert.equal(eager.length, 9);
});

// Heads drafting chains: keel-tiny's EAGLE-3 head, and the MTP layers of GLM-4.5 (GQA) and GLM-5
// (MLA with its indexer) in the oracle fixtures' checkpoints (vocabulary 128), and Qwen3-Next's
// (gated attention + MoE, over a target whose Gated DeltaNet layers keep a state slot per sequence).
// Prompts of one length (3) make every sequence's first catch-up as long as a chain's (K + 1
// tokens): that pass replays a graph too.
const eagle3 = (model: Awaited<ReturnType<typeof loadModel>>) => loadEagleHead(join(dirname(DEFAULT_MODEL_DIR), 'keel-tiny-eagle3'), 3, model);
const GRAPHED_HEADS: { label: string; target: string; head: (model: Awaited<ReturnType<typeof loadModel>>) => DraftHead; prompts: number[][] }[] = [
  { label: 'an EAGLE-3 head', target: DEFAULT_MODEL_DIR, head: eagle3, prompts: [[5, 9, 2, 77, 31], [8, 8, 100, 3, 41, 2, 9, 19, 4], [300, 12]] },
  { label: 'an EAGLE-3 head catching up over as many tokens in every sequence', target: DEFAULT_MODEL_DIR, head: eagle3, prompts: [[5, 9, 2], [8, 8, 100], [300, 12, 7]] },
  ...['glm4-moe', 'glm-moe-dsa', 'qwen3-next-moe'].map((name) => ({
    label: `${name}'s MTP layer`,
    target: join(FIXTURES_DIR, name),
    head: (model: Awaited<ReturnType<typeof loadModel>>) => loadMtpHead(model, () => openCheckpoint(join(FIXTURES_DIR, name))),
    prompts: [[5, 9, 2, 77, 31], [8, 8, 100, 3, 41, 2, 9, 19, 4], [120, 12]],
  })),
];

for (const { label, target, head: loadHead, prompts } of GRAPHED_HEADS) test(`with ${label}, plain decode steps, the chain's drafting passes and the verification replay graphs, and draft and verify what eager steps do`, async () => {
  const model = await loadModel({ model: target, backend: 'cpu', showProgress: false });
  const head = loadHead(model);
  const K = 4;
  // `readsDrafts`: the verification draws read the drafts on the host (penalties), so the chain is read before the verification is launched.
  const run = (graphs: boolean, readsDrafts: boolean) => {
    const events: string[] = [];
    const replayed: Replayed[] = [];
    const deviceTokens: number[] = [];
    const counting = countingBackend(model.backend, events, deviceTokens);
    const backend = graphs ? recordingBackend(counting, replayed) : counting;
    // A state layer's slots, as the engine lays them out with speculation on: a slot and a snapshot per sequence, then the graphs' scratch slot.
    const deviceStateSlots = stateSlotLayout(model.model.kvLayers, { maxNumSeqs: 8, speculative: {}, enablePrefixCaching: false, numStateCheckpoints: 0 }).total;
    const layout = { numBlocks: NUM_BLOCKS + 1, blockSize: BLOCK_SIZE, layers: model.model.kvLayers, stateSlots: deviceStateSlots };
    const proposer = new HeadProposer(head, backend.createKvCache({ ...layout, layers: HeadProposer.cacheLayers(head), stateSlots: 0 }), BLOCK_SIZE, 1);
    const kv = new KvCacheManager(new BlockPool(NUM_BLOCKS, true), { blockSize: BLOCK_SIZE, enablePrefixCaching: false, groups: [null], nullBlock: NUM_BLOCKS, lookback: 1, stateSlots: deviceStateSlots === 0 ? 0 : 8 });
    const scheduler = new Scheduler({ maxNumSeqs: 8, maxNumBatchedTokens: 256, blockSize: BLOCK_SIZE, maxModelLen: 256 }, kv);
    const scratchStateSlot = deviceStateSlots === 0 ? null : deviceStateSlots - 1;
    const runner = new ModelRunner(backend, model.model, backend.createKvCache(layout), BLOCK_SIZE, graphs ? { maxBatchSize: 8, scratchBlock: NUM_BLOCKS, scratchStateSlot } : null, { head: proposer });
    const seqs = prompts.map((p, i) => new Sequence(`r${i}`, p));
    for (const seq of seqs) scheduler.add(seq);
    const draws = (output: ReturnType<Scheduler['schedule']>): StepDraws => ({
      drawsFor: (s, site) => Array.from({ length: output.scheduled[s].seq.numDraftTokens + 1 }, (_, r) => greedyDraw({ ...site, row: site.row + r })),
      draftDraw: () => assert.fail('no draft model'),
      draftDrawReadsDrafts: () => assert.fail('no draft model'),
      verificationReadsDrafts: () => readsDrafts,
      promptTopLogprobs: () => 0,
    });
    // The prefill, two plain decode steps (graphs, with the head's feature rows written inside), then a step of K drafts each.
    const drafts: number[][] = [];
    const verified: number[][] = [];
    for (let step = 0; step < 4; step++) {
      if (step === 3) seqs.forEach((seq) => seq.appendDraftTokens(new Array<number>(K).fill(UNPROPOSED_DRAFT)));
      const output = scheduler.schedule();
      events.length = 0;
      replayed.length = 0;
      deviceTokens.length = 0;
      const result = runner.execute(output, draws(output));
      const tokens = result.read().tokenIds;
      if (step < 3) {
        scheduler.onStepComplete(output);
        result.samplingRows.forEach((s, row) => output.scheduled[s].seq.appendToken(tokens[result.firstDraw[row]]));
        if (graphs && step > 0) assert.deepEqual(replayed.map((r) => r.owner), [runner], 'a plain decode step replays the target\'s graph');
        continue;
      }
      seqs.forEach((seq) => drafts.push(Array.from({ length: K }, (_, d) => seq.draftTokenId(d))));
      result.samplingRows.forEach((s, row) => verified.push([...tokens.subarray(result.firstDraw[row], result.firstDraw[row] + K + 1)]));
      // The catch-up and K - 1 drafting passes (each reading its token where the pass before kept it), none read, then the target's verification.
      assert.deepEqual(events, [...new Array<string>(K).fill('sample'), 'sample', 'read']);
      assert.deepEqual(deviceTokens.slice(-K), [...new Array<number>(K - 1).fill(seqs.length), readsDrafts ? 0 : seqs.length * K], 'the chain passes read their tokens on the device, and so does a verification whose draws do not read its drafts');
      if (graphs) {
        // Every sequence verifies K drafts: the verification replays a graph of 4 rows of K + 1 tokens, unless state layers keep per-token snapshots.
        const verification = scratchStateSlot === null ? [[false, 4, 4 * (K + 1)]] : [];
        // The catch-up over K + 1 tokens in every sequence replays a graph with a logits row a sequence.
        const evenCatchUp = prompts.every((p) => p.length === 3) ? [[true, 4, 4]] : [];
        assert.deepEqual(
          replayed.map((r) => [r.owner === proposer, r.numSeqs, r.logitsRows]),
          [...evenCatchUp, ...new Array(K - 1).fill([true, 4, 4]), ...verification],
          'the drafting passes replay the head\'s graphs, and the verification the target\'s',
        );
      }
    }
    return { drafts, verified };
  };
  const eager = run(false, true);
  assert.deepEqual(run(true, true), eager);
  assert.deepEqual(run(false, false), eager, 'chains left on the device draft and verify what chains read first do');
  assert.deepEqual(run(true, false), eager);
  assert.ok(eager.drafts.flat().every((token) => token >= 0 && token < model.modelConfig.vocabSize));
});
