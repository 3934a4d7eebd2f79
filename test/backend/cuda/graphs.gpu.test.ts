import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeBatch } from '../../../src/step/batch.ts';
import { loadModel } from '../../../src/engine/load-engine.ts';
import { readLoraAdapter } from '../../../src/checkpoint/peft-adapter.ts';
import { listLoraFixtures } from '../../helpers/lora-parity.ts';
import { listOracleFixtures } from '../../helpers/oracle-fixtures.ts';

// A replayed graph must compute exactly what the ops compute eagerly, for new step data of the
// recorded shape, and a step of another shape must record its own graph.

test('replayed decode steps equal eager ones bit for bit, across step data and shapes', async () => {
  const fixture = listOracleFixtures().find((f) => f.name === 'llama-gqa');
  assert.ok(fixture, 'llama-gqa fixture');
  const loaded = await loadModel({ model: fixture.dir, backend: 'cuda', showProgress: false });
  const { backend, model, modelConfig } = loaded;
  try {
    const blockSize = 16;
    const cache = backend.createKvCache({ numBlocks: 64, blockSize, layers: model.kvLayers });
    // Fill some context first, so decode steps attend over real keys.
    const prompt = Array.from({ length: 32 }, (_, i) => (i * 37) % modelConfig.vocabSize);
    backend.toHost(model.forward(backend, backend.beginStep(describeBatch([{ tokens: prompt, startPos: 0, blockTables: [[0, 1]] }], blockSize)), cache));
    // Rows share the prompt's blocks and write their own tokens to a block each.
    const decode = (token: number, position: number, rows: number) =>
      describeBatch(
        Array.from({ length: rows }, (_, r) => ({ tokens: [token + r], startPos: position, blockTables: [[0, 1, 4 + r]] })),
        blockSize,
        undefined,
        4,
      );
    const owner = {};
    for (const [token, position, rows] of [[5, 32, 2], [9, 33, 2], [11, 34, 4], [3, 35, 2]]) {
      const eager = backend.toHost(model.forward(backend, backend.beginStep(decode(token, position, rows)), cache));
      const step = backend.beginStep(decode(token, position, rows));
      const replayed = backend.toHost(backend.replayForward(step, owner, () => model.forward(backend, step, cache)));
      assert.deepEqual(replayed, eager, `token ${token} at ${position}, ${rows} rows`);
    }
  } finally {
    backend.dispose();
  }
});

test('replayed decode steps with LoRA adapters equal eager ones, as slots and their adapters change', async () => {
  const fixture = listOracleFixtures().find((f) => f.name === 'llama-gqa');
  assert.ok(fixture, 'llama-gqa fixture');
  const loaded = await loadModel({ model: fixture.dir, backend: 'cuda', showProgress: false, enableLora: true, maxLoras: 2, maxLoraRank: 8 });
  const { backend, model, loraTargets } = loaded;
  try {
    const adapters = listLoraFixtures().map((f) => readLoraAdapter(f.dir, 8));
    const put = (slot: number, adapter: number) => loraTargets!.forEach((t) => t.setLoraSlot(backend, slot, adapters[adapter]));
    put(0, 0);
    put(1, 1);
    const blockSize = 16;
    const cache = backend.createKvCache({ numBlocks: 64, blockSize, layers: model.kvLayers });
    const prompt = Array.from({ length: 32 }, (_, i) => (i * 37) % 256);
    backend.toHost(model.forward(backend, backend.beginStep(describeBatch([{ tokens: prompt, startPos: 0, blockTables: [[0, 1]] }], blockSize)), cache));
    // Row r runs with slot slots[r] (-1: the base model).
    const decode = (token: number, position: number, slots: number[]) =>
      describeBatch(
        slots.map((slot, r) => ({ tokens: [token + r], startPos: position, blockTables: [[0, 1, 4 + r]], ...(slot >= 0 ? { loraSlot: slot } : {}) })),
        blockSize,
        undefined,
        4,
      );
    const owner = {};
    const steps: [number, number, number[], (() => void) | null][] = [
      [5, 32, [0, 1, -1, 0], null],
      [9, 33, [1, -1, 0, 1], null],
      // The slots trade adapters: the recorded graph must read the new weights.
      [11, 34, [0, 1, -1, 0], () => (put(0, 1), put(1, 0))],
      [3, 35, [-1, -1, -1, -1], null],
    ];
    for (const [token, position, slots, before] of steps) {
      before?.();
      const eager = backend.toHost(model.forward(backend, backend.beginStep(decode(token, position, slots)), cache));
      const step = backend.beginStep(decode(token, position, slots));
      const replayed = backend.toHost(backend.replayForward(step, owner, () => model.forward(backend, step, cache)));
      assert.deepEqual(replayed, eager, `token ${token} at ${position}, slots ${slots.join(' ')}`);
    }
  } finally {
    backend.dispose();
  }
});
