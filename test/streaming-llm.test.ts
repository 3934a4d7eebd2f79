import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LLM } from '../src/engine/llm.ts';
import type { DecoderConfig } from '../src/models/decoder.ts';
import { readModelArchitecture } from '../src/models/registry.ts';
import { listOracleFixtures, type OracleFixture } from './helpers/oracle-fixtures.ts';
import { fixtureKvLayers } from './helpers/transformers-parity.ts';

// StreamingLLM (docs/long-context.md) end to end on the CPU backend. The attention it computes is
// checked against the paper's definition in src/backend/cpu/ops/streaming-attention.test.ts; here:
// the default model running far past its context in a pool it could not otherwise fill, and
// every fixture giving transformers' own tokens while the window still holds the whole sequence.

const GREEDY = { temperature: 0, ignoreEos: true } as const;

test('keel-tiny (2,048 positions) generates 3,000 tokens in one request with sinks 4 and window 252, in a 24-block pool', async () => {
  // A sequence holds at most the sink block, the window's 16 blocks, and those of a 64-token chunk:
  // 22 blocks of 16 tokens, 352 positions of KV for a 3,000-token continuation.
  const numKvBlocks = 24;
  const llm = await LLM.load({ backend: 'cpu', showProgress: false, streamingSinks: 4, streamingWindow: 252, numKvBlocks, maxNumBatchedTokens: 64 });
  try {
    let fewestFree = numKvBlocks;
    let tokens = 0;
    let finish: string | null = null;
    for await (const update of llm.stream('import numpy as np\n', { ...GREEDY, maxTokens: 3000 })) {
      fewestFree = Math.min(fewestFree, llm.stats().numFreeKvBlocks);
      for (const delta of update.deltas) {
        tokens += delta.tokenIds.length;
        finish = delta.finishReason ?? finish;
      }
    }
    assert.equal(tokens, 3000);
    assert.equal(finish, 'length');
    assert.ok(numKvBlocks - fewestFree <= 22, `at most 22 blocks in use at once (used ${numKvBlocks - fewestFree})`);
    assert.equal(llm.stats().numFreeKvBlocks, numKvBlocks, 'every block is free once the request ends');
  } finally {
    await llm.close();
  }
});

test('without streaming the same request is refused: 3,000 tokens do not fit the model\'s 2,048 positions', async () => {
  const llm = await LLM.load({ backend: 'cpu', showProgress: false });
  try {
    await assert.rejects(llm.generate(['import numpy as np\n'], { ...GREEDY, maxTokens: 3000 }), /2048/);
  } finally {
    await llm.close();
  }
});

test('streaming options are checked: both or neither, and sinks plus window within the model\'s context', async () => {
  await assert.rejects(LLM.load({ backend: 'cpu', showProgress: false, streamingSinks: 4 }), /both streamingSinks and streamingWindow/);
  await assert.rejects(LLM.load({ backend: 'cpu', showProgress: false, streamingSinks: 4, streamingWindow: 0 }), /streamingWindow must be a positive integer/);
  await assert.rejects(LLM.load({ backend: 'cpu', showProgress: false, streamingSinks: -1, streamingWindow: 8 }), /streamingSinks must be a non-negative integer/);
  await assert.rejects(LLM.load({ backend: 'cpu', showProgress: false, streamingSinks: 4, streamingWindow: 2045 }), /exceed the model's context length \(2048\)/);
});

// Rotary variants whose frequencies move with the position (dynamic NTK, LongRoPE) rotate at one
// set of frequencies under streaming, so they leave transformers' tokens; Llama 4's chunked and
// NoPE layers refuse streaming (their own test checks the error).
const POSITION_DEPENDENT = /dynamic|longrope|partial-rotary|llama4/;
const SINKS = 4;
const WINDOW = 96;

/**
 * MLA is not streamed yet (DeepSeek, GLM-4.7-Flash, GLM-5), and q/k norms after RoPE (Hunyuan)
 * would have to follow the rotation streaming gives queries inside attention: both refuse
 * streaming. (A recurrent state, Qwen3.5's, is constant in size: only its attention layers stream.)
 */
function refusesStreaming(fixture: OracleFixture): boolean {
  return fixtureKvLayers(fixture).some((layer) => layer.kind === 'mla') || normsAfterRope(fixture);
}

function normsAfterRope(fixture: OracleFixture): boolean {
  const config = readModelArchitecture(fixture.dir).config as Partial<DecoderConfig>;
  return config.qkNormAfterRope === true;
}

test('a model with latent attention or q/k norms after RoPE refuses streaming, naming it', async () => {
  const refusing = listOracleFixtures().filter(refusesStreaming);
  assert.ok(['deepseek-v3', 'hunyuan-dense-norm-after-rope'].every((name) => refusing.some((f) => f.name === name)), refusing.map((f) => f.name).join(', '));
  for (const fixture of refusing) {
    await assert.rejects(LLM.load({ model: fixture.dir, backend: 'cpu', showProgress: false, streamingSinks: SINKS, streamingWindow: WINDOW }), /StreamingLLM/, fixture.name);
  }
});

for (const fixture of listOracleFixtures().filter((f) => !POSITION_DEPENDENT.test(f.name) && !refusesStreaming(f))) {
  test(`${fixture.name}: with a window that holds every sequence, streaming gives transformers' greedy tokens`, async (t) => {
    const longest = Math.max(...fixture.oracle.prompts.map((p) => p.length)) + fixture.oracle.max_new_tokens;
    assert.ok(longest <= SINKS + WINDOW);
    if (readModelArchitecture(fixture.dir).config.contextLength < SINKS + WINDOW) return t.skip('context shorter than sinks + window');
    const llm = await LLM.load({ model: fixture.dir, backend: 'cpu', showProgress: false, blockSize: 4, streamingSinks: SINKS, streamingWindow: WINDOW });
    try {
      const outputs = await llm.generate(fixture.oracle.prompts, { ...GREEDY, maxTokens: fixture.oracle.max_new_tokens });
      outputs.forEach((out, i) => assert.deepEqual(out.outputs[0].tokenIds, fixture.oracle.greedy[i], `prompt ${i}`));
    } finally {
      await llm.close();
    }
  });
}

test('streaming past the window: a second run of the same long prompt reuses the sink and window blocks from the prefix cache and repeats its tokens', async () => {
  const llm = await LLM.load({ backend: 'cpu', showProgress: false, streamingSinks: 4, streamingWindow: 60, blockSize: 8 });
  try {
    const prompt = Array.from({ length: 150 }, (_, i) => 100 + ((i * 37) % 500));
    const [first] = await llm.generate([prompt], { ...GREEDY, maxTokens: 40 });
    const [second] = await llm.generate([prompt], { ...GREEDY, maxTokens: 40 });
    assert.deepEqual(second.outputs[0].tokenIds, first.outputs[0].tokenIds);
    assert.ok(second.metrics.numCachedTokens >= 144, `the prompt's full blocks were hits (${second.metrics.numCachedTokens} cached tokens)`);
  } finally {
    await llm.close();
  }
});

test('streaming in a batch with preemption: each sequence gives the tokens it gives alone', async () => {
  const prompts = [0, 1, 2, 3].map((k) => Array.from({ length: 30 + 20 * k }, (_, i) => 200 + ((i * (k + 3)) % 300)));
  const options = { backend: 'cpu', showProgress: false, streamingSinks: 2, streamingWindow: 40, blockSize: 8, maxNumBatchedTokens: 16 } as const;
  const alone = await LLM.load(options);
  const crowded = await LLM.load({ ...options, numKvBlocks: 16 });
  try {
    const expected: number[][] = [];
    for (const prompt of prompts) expected.push((await alone.generate([prompt], { ...GREEDY, maxTokens: 60 }))[0].outputs[0].tokenIds);
    const outputs = await crowded.generate(prompts, { ...GREEDY, maxTokens: 60 });
    assert.ok(outputs.some((o) => o.metrics.numPreemptions > 0), 'the 16-block pool was meant to force preemption');
    outputs.forEach((out, i) => assert.deepEqual(out.outputs[0].tokenIds, expected[i], `prompt ${i}`));
    assert.equal(crowded.stats().numFreeKvBlocks, 16);
  } finally {
    await alone.close();
    await crowded.close();
  }
});

test('a hybrid model (Qwen3.5: Gated DeltaNet and full attention) streams 400 tokens past its 128 positions: its attention layers keep sinks and window, its states stay one slot a sequence', async () => {
  const fixture = listOracleFixtures().find((f) => f.name === 'qwen3.5-hybrid');
  assert.ok(fixture, 'the qwen3.5-hybrid fixture');
  // Sinks and window fill 16 blocks of 4, plus those of a 16-token chunk.
  const numKvBlocks = 24;
  const llm = await LLM.load({ model: fixture.dir, backend: 'cpu', showProgress: false, blockSize: 4, numKvBlocks, maxNumBatchedTokens: 16, streamingSinks: 4, streamingWindow: 60 });
  try {
    const outputs = await llm.generate(fixture.oracle.prompts.slice(0, 2), { ...GREEDY, maxTokens: 400 });
    for (const o of outputs) assert.equal(o.outputs[0].tokenIds.length, 400);
    assert.equal(llm.stats().numFreeKvBlocks, numKvBlocks, 'every block is free once the requests end');
  } finally {
    await llm.close();
  }
});

test("Llama 4's chunked and NoPE layers refuse StreamingLLM with an error naming the flags", async () => {
  const fixture = listOracleFixtures().find((f) => f.name === 'llama4-vl');
  assert.ok(fixture, 'the llama4-vl fixture');
  await assert.rejects(
    LLM.load({ model: fixture.dir, backend: 'cpu', showProgress: false, streamingSinks: SINKS, streamingWindow: WINDOW }),
    /--streaming-sinks\/--streaming-window\) does not combine with Llama 4's chunked and NoPE attention layers/,
  );
});
