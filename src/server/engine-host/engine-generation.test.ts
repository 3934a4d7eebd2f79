import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RequestOutput, StreamDelta } from '../../engine/outputs.ts';
import { EngineGeneration, type PromptUpdate } from './engine-generation.ts';

const delta = (text: string, finishReason: StreamDelta['finishReason'] = null): StreamDelta => ({ index: 0, text, tokenIds: [1], logprobs: null, finishReason, stopReason: null });
const output = { outputs: [] } as unknown as RequestOutput;

function generation(numPrompts: number) {
  const aborted: number[][] = [];
  const started: number[] = [];
  const finished: RequestOutput[] = [];
  const g = new EngineGeneration(numPrompts, (indices) => aborted.push(indices), { onStarted: (i) => started.push(i), onFinished: (o) => finished.push(o) });
  return { g, aborted, started, finished };
}

async function collect(g: EngineGeneration): Promise<PromptUpdate[]> {
  const updates: PromptUpdate[] = [];
  for await (const update of g) updates.push(update);
  return updates;
}

test('updates of every prompt come merged in arrival order; the stream ends when every prompt has finished', async () => {
  const { g, started, finished } = generation(2);
  g.deliver(1, [delta('b')], null);
  g.deliver(0, [delta('a', 'stop')], output);
  await g.whenStarted();
  g.deliver(1, [delta('c', 'length')], output);
  const updates = await collect(g);
  assert.deepEqual(
    updates.map((u) => [u.promptIndex, u.deltas[0].text, u.final !== null]),
    [
      [1, 'b', false],
      [0, 'a', true],
      [1, 'c', true],
    ],
  );
  assert.deepEqual(started, [1, 0]);
  assert.equal(finished.length, 2);
});

test('a prompt that fails before any update fails whenStarted, aborts the others, and leaves the queue', async () => {
  // One prompt fails first, the other has started: whenStarted must reject, not resolve.
  const { g, aborted, started } = generation(2);
  g.deliver(0, [delta('a')], null);
  g.fail(1, new Error('rejected by the engine'));
  await assert.rejects(g.whenStarted(), /rejected by the engine/);
  assert.deepEqual(aborted, [[0]]);
  assert.deepEqual(started, [0, 1]);
  await assert.rejects(collect(g), /rejected by the engine/);
});

test('leaving the stream early aborts the prompts still running', async () => {
  const { g, aborted } = generation(3);
  g.deliver(0, [delta('a', 'stop')], output);
  g.deliver(1, [delta('b')], null);
  for await (const update of g) {
    assert.equal(update.promptIndex, 0);
    break;
  }
  assert.deepEqual(aborted, [[1, 2]]);
});
