import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startTsProcess } from '../../src/threads/ts-process.ts';

// The transport of the CUDA worker processes (docs/parallelism.md): a TypeScript module forked
// with the loader it needs, over an IPC channel that carries typed arrays and bigints as the step
// orders and communicator addresses need.

test('a forked TypeScript module gets structured clones (typed arrays, bigints) both ways, its name and its env', async () => {
  const child = startTsProcess(new URL('./echo-process.ts', import.meta.url), 'keel-rank-7', { KEEL_ECHO: 'here' });
  try {
    const sent = { type: 'step', ids: Int32Array.of(3, -1, 5), address: 2n ** 60n + 1n, draws: [{ row: 0, allowed: new Int32Array(2) }] };
    const reply = new Promise((resolve) => child.once('message', resolve));
    child.send(sent);
    assert.deepEqual(await reply, { got: sent, argv: ['keel-rank-7'], env: 'here' });
  } finally {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.disconnect();
    await exited;
  }
});
