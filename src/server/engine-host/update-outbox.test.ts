import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { StreamDelta } from '../../engine/outputs.ts';
import type { RequestUpdate } from './engine-protocol.ts';
import { UpdateOutbox } from './update-outbox.ts';

const delta = (index: number, text: string, tokenId: number, finishReason: StreamDelta['finishReason'] = null): StreamDelta => ({
  index,
  text,
  tokenIds: [tokenId],
  logprobs: [{ sampled: { tokenId, token: text, logprob: -tokenId }, top: [] }],
  finishReason,
  stopReason: null,
});
const turn = () => new Promise((resolve) => setImmediate(resolve));
const metrics = { arrivalTime: 0, firstScheduledTime: 0, firstTokenTime: 0, finishedTime: 1, numCachedTokens: 0, numHostCachedTokens: 0, numPreemptions: 0, numSwaps: 0, speculation: null };

function outbox() {
  const batches: RequestUpdate[][] = [];
  return { box: new UpdateOutbox((updates) => batches.push(structuredClone(updates))), batches };
}

test('a turn\'s updates leave as one batch; while it is unacknowledged, later ones merge per request and completion', async () => {
  const { box, batches } = outbox();
  box.add({ id: 1, deltas: [delta(0, 'a', 1)], finished: null });
  box.add({ id: 2, deltas: [delta(0, 'x', 9)], finished: null });
  await turn();
  assert.equal(batches.length, 1);
  assert.deepEqual(batches[0].map((u) => u.id), [1, 2]);

  const engineDelta = delta(0, 'b', 2);
  const engineDeltas = [engineDelta, delta(1, 'B', 20)];
  box.add({ id: 1, deltas: engineDeltas, finished: null });
  box.add({ id: 1, deltas: [delta(0, 'c', 3), delta(1, 'C', 30, 'length')], finished: null });
  box.add({ id: 1, deltas: [delta(0, 'd', 4, 'stop')], finished: metrics });
  await turn();
  assert.equal(batches.length, 1, 'nothing more leaves before the acknowledgement');
  assert.equal(box.holding, true);
  box.acknowledged();
  await turn();
  assert.equal(batches.length, 2);
  const [merged] = batches[1];
  assert.equal(merged.finished?.finishedTime, 1);
  assert.deepEqual(
    merged.deltas.map((d) => [d.index, d.text, d.tokenIds, d.logprobs?.map((p) => p.sampled.tokenId), d.finishReason]),
    [
      [0, 'bcd', [2, 3, 4], [2, 3, 4], 'stop'],
      [1, 'BC', [20, 30], [20, 30], 'length'],
    ],
  );
  assert.deepEqual(engineDelta.tokenIds, [2], 'the engine\'s own delta is copied, not extended');
  assert.equal(engineDeltas[0], engineDelta, 'nor its array of deltas');
});

test('an abort\'s delta stays apart from the text before it; sendNow sends at once, acknowledged or not', async () => {
  const { box, batches } = outbox();
  box.add({ id: 1, deltas: [delta(0, 'a', 1)], finished: null });
  await turn();
  box.add({ id: 1, deltas: [delta(0, 'b', 2)], finished: null });
  box.add({ id: 1, deltas: [{ ...delta(0, '', 0, 'abort'), tokenIds: [], logprobs: [] }], finished: metrics });
  box.sendNow();
  assert.equal(batches.length, 2);
  assert.deepEqual(
    batches[1][0].deltas.map((d) => [d.text, d.finishReason]),
    [
      ['b', null],
      ['', 'abort'],
    ],
  );
  // Two batches in flight: the next leaves only once both are acknowledged.
  box.add({ id: 3, deltas: [delta(0, 'z', 5)], finished: null });
  box.acknowledged();
  await turn();
  assert.equal(batches.length, 2);
  box.acknowledged();
  await turn();
  assert.equal(batches.length, 3);
});
