import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { lengthRange, NANO_VLLM_WORKLOAD, randomRequests } from '../../src/bench/random-dataset.ts';
import { KeelError } from '../../src/errors.ts';

const SEED = Number(process.env.TEST_SEED ?? Date.now() % 100000);
console.log(`random-dataset seed: ${SEED}`);

test('lengths stay in their ranges and token ids in the vocabulary', () => {
  const requests = randomRequests({ numPrompts: 300, inputLen: { min: 5, max: 40 }, outputLen: { min: 3, max: 9 }, vocabSize: 50, seed: SEED });
  assert.equal(requests.length, 300);
  for (const r of requests) {
    assert.ok(r.promptTokenIds.length >= 5 && r.promptTokenIds.length <= 40);
    assert.ok(r.outputLen >= 3 && r.outputLen <= 9);
    assert.ok(r.promptTokenIds.every((id) => Number.isInteger(id) && id >= 0 && id < 50));
  }
  // 300 uniform draws over 36 lengths reach both ends; and over a 50-token vocabulary, its last id.
  const lengths = requests.map((r) => r.promptTokenIds.length);
  assert.equal(Math.min(...lengths), 5);
  assert.equal(Math.max(...lengths), 40);
  assert.ok(requests.some((r) => r.promptTokenIds.includes(49)));
});

test('the same seed gives the same dataset; another seed another one', () => {
  const spec = { numPrompts: 20, inputLen: { min: 1, max: 64 }, outputLen: { min: 1, max: 64 }, vocabSize: 1000, seed: SEED };
  assert.deepEqual(randomRequests(spec), randomRequests(spec));
  assert.notDeepEqual(randomRequests({ ...spec, seed: SEED + 1 }), randomRequests(spec));
});

test('fixed lengths are exact', () => {
  const requests = randomRequests({ numPrompts: 4, inputLen: { min: 64, max: 64 }, outputLen: { min: 32, max: 32 }, vocabSize: 8192, seed: SEED });
  assert.ok(requests.every((r) => r.promptTokenIds.length === 64 && r.outputLen === 32));
});

test('lengthRange follows vLLM: floor of len*(1-r), ceiling of len*(1+r), at least 1', () => {
  assert.deepEqual(lengthRange('--input-len', 1024, 0), { min: 1024, max: 1024 });
  assert.deepEqual(lengthRange('--input-len', 1024, 0.5), { min: 512, max: 1536 });
  assert.deepEqual(lengthRange('--input-len', 5, 0.3), { min: 3, max: 7 });
  assert.deepEqual(lengthRange('--input-len', 1, 0.99), { min: 1, max: 2 });
  assert.throws(() => lengthRange('--input-len', 10, 1), KeelError);
  assert.throws(() => lengthRange('--output-len', 0, 0), /--output-len/);
});

test('bad dataset sizes are user errors', () => {
  assert.throws(() => randomRequests({ numPrompts: 0, inputLen: { min: 1, max: 1 }, outputLen: { min: 1, max: 1 }, vocabSize: 10, seed: 0 }), KeelError);
  assert.throws(() => randomRequests({ numPrompts: 1, inputLen: { min: 5, max: 4 }, outputLen: { min: 1, max: 1 }, vocabSize: 10, seed: 0 }), /input length range/);
});

test('the nano-vllm workload is its bench.py: 256 sequences, 100..1024 in and out, temperature 0.6', () => {
  assert.deepEqual(NANO_VLLM_WORKLOAD, { kind: 'random', name: 'nano-vllm', numPrompts: 256, inputLen: { min: 100, max: 1024 }, outputLen: { min: 100, max: 1024 }, temperature: 0.6 });
});

test('the peers\' Python port draws the very same dataset', (t) => {
  const python = spawnSync('python3', ['tools/peers/bench_result.py', 'random-requests', '--num-prompts', '16', '--input-len', '1:300', '--output-len', '10:20', '--vocab-size', '151936', '--seed', String(SEED)], {
    encoding: 'utf8',
  });
  if (python.error) return t.skip('python3 is not installed');
  assert.equal(python.status, 0, python.stderr);
  const expected = randomRequests({ numPrompts: 16, inputLen: { min: 1, max: 300 }, outputLen: { min: 10, max: 20 }, vocabSize: 151936, seed: SEED });
  assert.deepEqual(JSON.parse(python.stdout), expected);
});
