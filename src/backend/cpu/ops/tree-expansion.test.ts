import assert from 'node:assert/strict';
import { test } from 'node:test';
import { expandDepth, type DraftNode } from './tree-expansion.ts';

const c = (token: number, logprob: number) => ({ token, logprob });

test('the first depth keeps the root\'s best candidates, their path log-probabilities their own', () => {
  const kept = expandDepth([], [-1], [[c(7, -0.5), c(3, -1.25), c(9, -2)]], 2);
  assert.deepEqual(kept, [
    { token: 7, parent: -1, logprob: -0.5 },
    { token: 3, parent: -1, logprob: -1.25 },
  ]);
});

test('a depth ranks every frontier node\'s children by path log-probability, across parents', () => {
  const nodes: DraftNode[] = [
    { token: 7, parent: -1, logprob: -0.5 },
    { token: 3, parent: -1, logprob: -1 },
  ];
  // Node 1's best child (-1 - 0.25) beats node 0's second (-0.5 - 1).
  const kept = expandDepth(nodes, [0, 1], [[c(11, -0.125), c(12, -1)], [c(21, -0.25), c(22, -2)]], 3);
  assert.deepEqual(kept.map((n) => [n.token, n.parent, n.logprob]), [[11, 0, -0.625], [21, 1, -1.25], [12, 0, -1.5]]);
});

test('equal path log-probabilities go to the earlier frontier node, then to the better-ranked candidate', () => {
  const nodes: DraftNode[] = [
    { token: 1, parent: -1, logprob: -1 },
    { token: 2, parent: -1, logprob: -1 },
  ];
  // Four children of path log-probability -2: node 0's two (in rank order), then node 1's.
  const kept = expandDepth(nodes, [1, 0], [[c(30, -1), c(31, -1)], [c(40, -1), c(41, -1)]], 3);
  assert.deepEqual(kept.map((n) => n.token), [30, 31, 40], 'the frontier as given: node 1 first here');
  const ranked = expandDepth(nodes, [0, 1], [[c(5, -1), c(4, -1)], [c(6, -0.5)]], 3);
  assert.deepEqual(ranked.map((n) => n.token), [6, 5, 4], 'then the candidates in their rank order, not by id');
});

test('path log-probabilities are float32 sums: children equal in float32 tie even where float64 sums differ', () => {
  // 0.1 + 0.2 and 0.3 differ in float64 but round to the same float32.
  const parents: DraftNode[] = [
    { token: 1, parent: -1, logprob: Math.fround(-0.1) },
    { token: 2, parent: -1, logprob: 0 },
  ];
  assert.notEqual(Math.fround(-0.1) + Math.fround(-0.2), Math.fround(-0.3));
  const kept = expandDepth(parents, [1, 0], [[c(8, Math.fround(-0.3))], [c(9, Math.fround(-0.2))]], 2);
  assert.equal(kept[0].logprob, kept[1].logprob);
  assert.deepEqual(kept.map((n) => n.token), [8, 9], 'a tie: the earlier frontier node first');
  assert.throws(() => expandDepth(parents, [0, 1], [[c(8, -1)]], 1), /2 frontier nodes, but candidates for 1/);
});
