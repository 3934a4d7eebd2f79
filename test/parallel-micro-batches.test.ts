import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { EngineOptions } from '../src/config.ts';
import { LLM } from '../src/engine/llm.ts';
import { DEFAULT_MODEL_DIR, loadEngine, type LoadedEngine } from '../src/engine/load-engine.ts';
import { resolveSamplingParams } from '../src/sampling/validate.ts';
import { listOracleFixtures } from './helpers/oracle-fixtures.ts';
import { checkGreedy, type ParityOptions } from './helpers/transformers-parity.ts';

// Pipeline parallel with several micro-batches in flight (docs/parallelism.md), on the CPU
// backend's thread ranks: the first stage runs micro-batch i + 1's layers before micro-batch i's
// logits come back from the last stage (so the stages work at once), and nothing an engine
// promises changes: greedy and seeded outputs equal one device's, with fewer sequences than
// micro-batches, n-gram drafts, forks, and a request aborted while its micro-batch is in flight.
// test/parallel-parity.test.ts runs every pipeline fixture with as many micro-batches as stages.

const fixture = listOracleFixtures().find((f) => f.name === 'llama-gqa')!;
const { prompts } = fixture.oracle;
const BASE = { model: fixture.dir, backend: 'cpu', showProgress: false, numKvBlocks: 64 } as const;
const PARITY: ParityOptions = { backend: 'cpu', logitTolerance: 1e-4, greedy: 'exact' };

/** The engine at PP 2 whose rank-0 backend logs, in order, each micro-batch's run of the first stage's layers, the send of its stream, and the receipt of its logits. */
async function tracedPipeline(options: EngineOptions): Promise<{ loaded: LoadedEngine; events: string[]; seqsPerRun: number[] }> {
  const loaded = await loadEngine({ ...BASE, pipelineParallelSize: 2, ...options });
  const backend = loaded.backend;
  const events: string[] = [];
  const seqsPerRun: number[] = [];
  const counts = { run: 0, send: 0, receive: 0 };
  const log = (what: keyof typeof counts) => events.push(`${what} ${++counts[what]}`);
  const [embedding, sendToStage, receiveFromStage] = [backend.embedding.bind(backend), backend.sendToStage.bind(backend), backend.receiveFromStage.bind(backend)];
  backend.embedding = (table, step, scale, firstRow) => {
    log('run');
    seqsPerRun.push(step.batch.numSeqs);
    return embedding(table, step, scale, firstRow);
  };
  // A stream is two sends (the residual and the output pending on it): one event.
  let sends = 0;
  backend.sendToStage = (x, stage) => {
    if (sends++ % 2 === 0) log('send');
    sendToStage(x, stage);
  };
  backend.receiveFromStage = (shape, stage) => {
    log('receive');
    return receiveFromStage(shape, stage);
  };
  return { loaded, events, seqsPerRun };
}

async function closeLoaded(loaded: LoadedEngine): Promise<void> {
  loaded.backend.dispose();
  await loaded.ranks?.close();
}

const greedy = (maxTokens: number) => resolveSamplingParams({ temperature: 0, ignoreEos: true, maxTokens }, {});

describe('two micro-batches in flight over two stages', () => {
  test('the first stage runs micro-batch i + 1 before micro-batch i\'s logits come back, each micro-batch half of the sequences', async () => {
    const { loaded, events, seqsPerRun } = await tracedPipeline({});
    try {
      prompts.forEach((prompt, i) => loaded.engine.addRequest({ id: `r${i}`, prompt: null, promptTokenIds: prompt, params: greedy(4), grammar: null, onUpdate: () => {} }));
      while (loaded.engine.hasUnfinished()) {
        loaded.engine.step();
        loaded.engine.checkInvariants();
      }
      // Stage 1 works on micro-batch i (sent, not yet back) while stage 0 runs micro-batch i + 1.
      assert.deepEqual(events.slice(0, 11), ['run 1', 'send 1', 'run 2', 'receive 1', 'send 2', 'run 3', 'receive 2', 'send 3', 'run 4', 'receive 3', 'send 4']);
      for (let i = 1; i <= counts(events, 'run'); i++) {
        const at = (what: string) => events.indexOf(`${what} ${i}`);
        assert.ok(at('run') < at('send') && at('send') < at('receive'), `micro-batch ${i}: run, send, then its logits`);
      }
      // Four sequences, two micro-batches of two: each decode step of 4 tokens takes 8 micro-batches.
      assert.deepEqual(seqsPerRun, [2, 2, 2, 2, 2, 2, 2, 2]);
      const stats = loaded.engine.stats();
      assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks);
    } finally {
      await closeLoaded(loaded);
    }
  });

  test('with one micro-batch in flight each one\'s logits come back before the next runs', async () => {
    const { loaded, events } = await tracedPipeline({ pipelineMicroBatches: 1 });
    try {
      prompts.forEach((prompt, i) => loaded.engine.addRequest({ id: `r${i}`, prompt: null, promptTokenIds: prompt, params: greedy(2), grammar: null, onUpdate: () => {} }));
      while (loaded.engine.hasUnfinished()) loaded.engine.step();
      assert.deepEqual(events, ['run 1', 'send 1', 'receive 1', 'run 2', 'send 2', 'receive 2']);
    } finally {
      await closeLoaded(loaded);
    }
  });

  test('one sequence, fewer than the micro-batches: it runs alone, one micro-batch in flight, with transformers\' tokens', async () => {
    const { loaded, events, seqsPerRun } = await tracedPipeline({});
    try {
      let tokens: number[] = [];
      const maxTokens = fixture.oracle.max_new_tokens;
      loaded.engine.addRequest({ id: 'r', prompt: null, promptTokenIds: prompts[0], params: greedy(maxTokens), grammar: null, onUpdate: (r) => (tokens = r.completions[0].output.tokenIds) });
      while (loaded.engine.hasUnfinished()) loaded.engine.step();
      assert.deepEqual(tokens, fixture.oracle.greedy[0].slice(0, maxTokens));
      assert.deepEqual(events.slice(0, 6), ['run 1', 'send 1', 'receive 1', 'run 2', 'send 2', 'receive 2']);
      assert.ok(seqsPerRun.every((n) => n === 1));
    } finally {
      await closeLoaded(loaded);
    }
  });

  test('a request aborted while its micro-batch is in flight ends at once; the others keep transformers\' tokens and every block comes back', async () => {
    const { loaded, seqsPerRun } = await tracedPipeline({});
    try {
      const maxTokens = fixture.oracle.max_new_tokens;
      const tokens = new Map<string, number[]>();
      const updates = new Map<string, number>();
      prompts.forEach((prompt, i) =>
        loaded.engine.addRequest({
          id: `r${i}`,
          prompt: null,
          promptTokenIds: prompt,
          params: greedy(maxTokens),
          grammar: null,
          onUpdate: (r) => {
            tokens.set(r.id, [...r.completions[0].output.tokenIds]);
            updates.set(r.id, (updates.get(r.id) ?? 0) + 1);
          },
        }),
      );
      // Micro-batch 2 (r2, r3) is launched, micro-batch 1 read; then 3 (r0, r1) launched and 2 read; then 4 (r2, r3) launched.
      for (let i = 0; i < 4; i++) loaded.engine.step();
      assert.deepEqual(seqsPerRun, [2, 2, 2, 2]);
      const seen = updates.get('r2');
      assert.ok(loaded.engine.abort('r2'));
      const afterAbort = updates.get('r2');
      assert.equal(afterAbort, (seen ?? 0) + 1, 'the abort is reported once');
      while (loaded.engine.hasUnfinished()) {
        loaded.engine.step();
        loaded.engine.checkInvariants();
      }
      assert.equal(updates.get('r2'), afterAbort, 'no update after the abort: its late token is dropped');
      for (const i of [0, 1, 3]) assert.deepEqual(tokens.get(`r${i}`), fixture.oracle.greedy[i].slice(0, maxTokens), `prompt ${i}`);
      const stats = loaded.engine.stats();
      assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks);
    } finally {
      await closeLoaded(loaded);
    }
  });

  test('seeded sampling of two completions per prompt, and beam search, equal one device\'s', async () => {
    const sampled = { temperature: 0.8, topP: 0.9, seed: 7, n: 2, maxTokens: 10, ignoreEos: true };
    const beams = { useBeamSearch: true, n: 2, beamWidth: 3, maxTokens: 6, ignoreEos: true };
    const run = async (options: EngineOptions) => {
      const llm = await LLM.load({ ...BASE, ...options });
      try {
        const outputs = [...(await llm.generate(prompts, sampled)), ...(await llm.generate(prompts, beams))];
        const stats = llm.stats();
        assert.equal(stats.numFreeKvBlocks, stats.numKvBlocks);
        return outputs.map((o) => o.outputs.map((c) => c.tokenIds));
      } finally {
        await llm.close();
      }
    };
    assert.deepEqual(await run({ pipelineParallelSize: 2 }), await run({}));
  });

  for (const parallel of [{ pipelineParallelSize: 2 }, { tensorParallelSize: 2, pipelineParallelSize: 2 }]) {
    test(`n-gram drafts at ${JSON.stringify(parallel)}: greedy continuations equal transformers'`, async () => {
      await checkGreedy(fixture, PARITY, { ...parallel, backend: 'cpu', speculative: { method: 'ngram', numSpeculativeTokens: 4, ngramMin: 1, ngramMax: 3 } }, false);
    });
  }

  test('four stages, four micro-batches and n-gram drafts: each sampling pass is read while one of the two latest (as CUDA\'s downloads require), with one device\'s tokens', async () => {
    // keel-tiny has four layers: one per stage. Its drafts repeat: a verification drains the three micro-batches before it.
    const speculative = { method: 'ngram', numSpeculativeTokens: 4, ngramMin: 1, ngramMax: 3 } as const;
    const run = async (options: EngineOptions) => {
      const loaded = await loadEngine({ backend: 'cpu', showProgress: false, numKvBlocks: 64, model: DEFAULT_MODEL_DIR, speculative, ...options });
      try {
        const backend = loaded.backend;
        const sampleRows = backend.sampleRows.bind(backend);
        let passes = 0;
        backend.sampleRows = (x, draws) => {
          const pass = ++passes;
          const sampled = sampleRows(x, draws);
          return {
            read: () => {
              assert.ok(passes - pass < 2, `sampling pass ${pass} read after ${passes - pass} later ones`);
              return sampled.read();
            },
          };
        };
        const tokens: number[][] = [];
        [...prompts, ...prompts].forEach((prompt, i) =>
          loaded.engine.addRequest({ id: `r${i}`, prompt: null, promptTokenIds: prompt, params: greedy(24), grammar: null, onUpdate: (r) => (tokens[i] = r.completions[0].output.tokenIds) }),
        );
        while (loaded.engine.hasUnfinished()) loaded.engine.step();
        assert.ok(loaded.engine.stats().speculation!.numDraftTokens > 0, 'drafts were verified');
        return tokens;
      } finally {
        await closeLoaded(loaded);
      }
    };
    assert.deepEqual(await run({ pipelineParallelSize: 4 }), await run({}));
  });

  test('more micro-batches than stages are refused at load', async () => {
    await assert.rejects(LLM.load({ ...BASE, pipelineParallelSize: 2, pipelineMicroBatches: 3 }), /pipelineMicroBatches 3 exceeds pipelineParallelSize 2/);
    await assert.rejects(LLM.load({ ...BASE, pipelineMicroBatches: 2 }), /pipelineMicroBatches 2 exceeds pipelineParallelSize 1/);
  });
});

function counts(events: string[], what: string): number {
  return events.filter((e) => e.startsWith(`${what} `)).length;
}
