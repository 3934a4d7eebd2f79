import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fetchBootstrap, multiNodeFromEnv, ranksOfNode, serveBootstrap } from './bootstrap.ts';

// The multi-node id exchange over loopback: what crosses machines is the same TCP exchange. The
// CPU communicator cannot span processes, so no collective runs across the nodes here.

test('the torchrun/LeaderWorkerSet variables give the node, its peers and where rank 0 serves', () => {
  assert.equal(multiNodeFromEnv({}), null);
  assert.equal(multiNodeFromEnv({ NNODES: '1', NODE_RANK: '0' }), null);
  assert.deepEqual(multiNodeFromEnv({ MASTER_ADDR: 'leader.keel', MASTER_PORT: '29500', NODE_RANK: '1', NNODES: '2' }), {
    masterAddr: 'leader.keel',
    masterPort: 29500,
    nodeRank: 1,
    nnodes: 2,
  });
  assert.throws(() => multiNodeFromEnv({ MASTER_ADDR: 'a', NNODES: '2', NODE_RANK: '0' }), /MASTER_PORT from the environment, and it is not set/);
  assert.throws(() => multiNodeFromEnv({ MASTER_ADDR: 'a', MASTER_PORT: '70000', NNODES: '2', NODE_RANK: '0' }), /MASTER_PORT must be a TCP port/);
  assert.throws(() => multiNodeFromEnv({ MASTER_ADDR: 'a', MASTER_PORT: '1', NNODES: '2', NODE_RANK: '2' }), /NODE_RANK 2 is not below NNODES 2/);
  assert.throws(() => multiNodeFromEnv({ MASTER_PORT: '1', NNODES: 'two', NODE_RANK: '0' }), /NNODES must be an integer of at least 1 \(got "two"\)/);
});

test('each node hosts an equal run of consecutive ranks', () => {
  assert.deepEqual(ranksOfNode(16, 1, 2), { first: 8, count: 8 });
  assert.throws(() => ranksOfNode(6, 0, 4), /6 ranks do not split evenly over 4 nodes/);
});

test('rank 0 serves the ids to every other node, which fetch them whole, even when they dial before it listens', async () => {
  const ids = Uint8Array.from({ length: 3 * 128 }, (_, i) => (i * 7) % 256);
  // A free port: bind 0, note it, let it go, and serve there a little after the first node dials.
  const probe = await serveBootstrap(new Uint8Array(0), 0, 1, '127.0.0.1');
  probe.close();
  const early = fetchBootstrap('127.0.0.1', probe.port, { timeoutMs: 10_000, retryMs: 50 });
  await new Promise((resolve) => setTimeout(resolve, 200));
  const server = await serveBootstrap(ids, probe.port, 2, '127.0.0.1');
  const late = fetchBootstrap('127.0.0.1', server.port, { timeoutMs: 10_000 });
  assert.deepEqual(await early, ids);
  assert.deepEqual(await late, ids);
  await server.served;
});

test('a node that finds no rank 0 gives up after its timeout, naming where it looked', async () => {
  const probe = await serveBootstrap(new Uint8Array(0), 0, 1, '127.0.0.1');
  probe.close();
  await assert.rejects(fetchBootstrap('127.0.0.1', probe.port, { timeoutMs: 300, retryMs: 50 }), new RegExp(`no multi-node bootstrap at 127\\.0\\.0\\.1:${probe.port} \\(MASTER_ADDR:MASTER_PORT\\) after 300 ms`));
});
