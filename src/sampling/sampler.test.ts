import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeelError } from '../errors.ts';
import { forkStream, type Rng } from './rng.ts';
import { deviceSample, deviceSamplingFor, sampleToken, type SequenceSamplingState } from './sampler.ts';
import { DEFAULT_SAMPLING_PARAMS, type SamplingParams } from './sampling-params.ts';

const row = (values: number[]) => Float32Array.from(values);
const fromProbs = (probs: number[]) => row(probs.map(Math.log));

/** A generator that returns the given floats, for pinning the inverse-CDF draw. */
function fixedRng(...floats: number[]): Rng {
  return {
    nextUint32: () => assert.fail('the sampler draws floats only'),
    nextFloat: () => floats.shift() ?? assert.fail('unexpected draw'),
  };
}

const untouchableRng: Rng = {
  nextUint32: () => assert.fail('greedy sampling must not draw'),
  nextFloat: () => assert.fail('greedy sampling must not draw'),
};

function state(params: Partial<SamplingParams>, rest: Partial<SequenceSamplingState> = {}): SequenceSamplingState {
  return {
    params: { ...DEFAULT_SAMPLING_PARAMS, ...params },
    rng: untouchableRng,
    promptTokenIds: [],
    outputTokenIds: [],
    eosTokenIds: [],
    ...rest,
  };
}

function testSeed(t: { diagnostic(message: string): void }): number {
  const seed = Number(process.env.KEEL_TEST_SEED ?? Math.floor(Math.random() * 2 ** 32));
  t.diagnostic(`seed ${seed}`);
  return seed;
}

test('greedy picks the argmax, the lowest id among ties, without drawing', () => {
  assert.equal(sampleToken(row([1, 3, 3, 2]), state({ temperature: 0 })).tokenId, 1);
  assert.equal(sampleToken(row([-5, -1, -3]), state({ temperature: 0 })).tokenId, 1);
  assert.equal(sampleToken(row([7, 7]), state({ temperature: 0, n: 4 })).tokenId, 0);
});

test('rows sample on the device when greedy or plain temperature sampling is the whole answer', () => {
  const greedy = { ...DEFAULT_SAMPLING_PARAMS, temperature: 0 };
  const on = (params: Partial<SamplingParams>, numOutput = 0, forking = false) => deviceSamplingFor({ ...greedy, ...params }, numOutput, forking, forkStream(1, 0));
  assert.deepEqual(on({}), { temperature: 0, seed: 0 });
  assert.deepEqual(on({}, 0, true), { temperature: 0, seed: 0 }, 'greedy forks all take the argmax');
  const random = on({ temperature: 0.7 });
  assert.equal(random?.temperature, 0.7);
  assert.ok(Number.isInteger(random?.seed), 'the seed comes from the sequence stream');
  assert.equal(on({ temperature: 0.7 }, 0, true), null, 'n > 1 forks draw independently on the host');
  assert.equal(on({ temperature: 0.7, topP: 0.9 }), null);
  assert.equal(on({ temperature: 0.7, topK: 40 }), null);
  assert.equal(on({ temperature: 0.7, minP: 0.1 }), null);
  assert.deepEqual(on({ logprobs: 0 }), { temperature: 0, seed: 0 }, 'the device computes the sampled token\'s logprob');
  assert.equal(on({ logprobs: 2 }), null, 'alternatives\' logprobs need the whole row');
  assert.equal(on({ repetitionPenalty: 1.1 }), null);
  assert.equal(on({ presencePenalty: 0.5 }), null);
  assert.equal(on({ frequencyPenalty: -0.5 }), null);
  assert.equal(on({ minTokens: 3 }, 2), null, 'EOS is still masked');
  assert.deepEqual(on({ minTokens: 3 }, 3), { temperature: 0, seed: 0 });
});

test('a device token of -1 (no finite logit) is the same error as on the host', () => {
  const params = state({}).params;
  assert.deepEqual(deviceSample(42, -0.5, params), { tokenId: 42 });
  assert.deepEqual(deviceSample(42, -0.5, { ...params, logprobs: 0 }), { tokenId: 42, logprobs: { sampled: { tokenId: 42, logprob: -0.5 }, top: [] } });
  assert.throws(() => deviceSample(-1, -Infinity, params), (e: unknown) => e instanceof KeelError && /no token can be sampled/.test(e.message));
  assert.throws(() => sampleToken(row([-Infinity, NaN]), state({ temperature: 0 })), (e: unknown) => e instanceof KeelError && /no token can be sampled/.test(e.message));
});

test('greedy applies penalties first', () => {
  const repeated = state({ temperature: 0, repetitionPenalty: 2 }, { outputTokenIds: [0] });
  assert.equal(sampleToken(row([3, 2.9]), repeated).tokenId, 1);
  const present = state({ temperature: 0, presencePenalty: 0.5 }, { outputTokenIds: [0] });
  assert.equal(sampleToken(row([3, 2.9]), present).tokenId, 1);
  const keptCounts = state({ temperature: 0, frequencyPenalty: 0.1 }, { outputTokenIds: [0], outputCounts: new Map([[0, 2]]) });
  assert.equal(sampleToken(row([3, 2.85]), keptCounts).tokenId, 1, 'caller-kept counts are used');
});

test('min tokens masks EOS and stop ids until enough outputs, EOS only unless ignoreEos', () => {
  const logits = () => row([0, 5, 4, 1]);
  const params = { temperature: 0, minTokens: 2, stopTokenIds: [2] };
  assert.equal(sampleToken(logits(), state(params, { eosTokenIds: [1], outputTokenIds: [3] })).tokenId, 3);
  assert.equal(sampleToken(logits(), state({ ...params, ignoreEos: true }, { eosTokenIds: [1], outputTokenIds: [3] })).tokenId, 1);
  assert.equal(sampleToken(logits(), state(params, { eosTokenIds: [1], outputTokenIds: [3, 3] })).tokenId, 1);
});

test('as temperature falls toward 0, sampling becomes the argmax', (t) => {
  const rng = forkStream(testSeed(t), 0);
  const logits = [1, 1.5, 0.5, 1.4];
  for (const temperature of [1e-6, 1e-4, 1e-3]) {
    for (let draw = 0; draw < 200; draw++) {
      assert.equal(sampleToken(row(logits), state({ temperature }, { rng })).tokenId, 1, `temperature ${temperature}`);
    }
  }
  let argmaxDraws = 0;
  for (let draw = 0; draw < 200; draw++) argmaxDraws += sampleToken(row(logits), state({ temperature: 1 }, { rng })).tokenId === 1 ? 1 : 0;
  assert.ok(argmaxDraws < 150, 'at temperature 1 the other tokens are drawn too');
});

test('the draw follows the inverse CDF and never lands on a masked token', () => {
  const probs = [0.1, 0.2, 0.3, 0.4];
  for (const [u, expected] of [
    [0, 0],
    [0.05, 0],
    [0.15, 1],
    [0.35, 2],
    [0.95, 3],
    [0.999999, 3],
  ]) {
    assert.equal(sampleToken(fromProbs(probs), state({}, { rng: fixedRng(u) })).tokenId, expected, `u = ${u}`);
  }
  assert.equal(sampleToken(row([-Infinity, 0, -Infinity]), state({}, { rng: fixedRng(0) })).tokenId, 1);
  assert.equal(sampleToken(row([0, 0, -Infinity]), state({}, { rng: fixedRng(0.999999) })).tokenId, 1);
  const truncated = state({ topK: 2 }, { rng: fixedRng(0.2) });
  assert.equal(sampleToken(fromProbs(probs), truncated).tokenId, 2, 'the draw is over the renormalized top-k');
});

function frequencies(probs: number[], params: Partial<SamplingParams>, rng: Rng, draws: number): number[] {
  const counts = new Array<number>(probs.length).fill(0);
  for (let i = 0; i < draws; i++) counts[sampleToken(fromProbs(probs), state(params, { rng })).tokenId]++;
  return counts.map((c) => c / draws);
}

function assertClose(observed: number[], expected: number[], draws: number): void {
  expected.forEach((p, i) => {
    // Five standard errors: a false alarm is a one-in-a-million event.
    const tolerance = 5 * Math.sqrt((p * (1 - p)) / draws) + 1e-9;
    assert.ok(Math.abs(observed[i] - p) <= tolerance, `token ${i}: frequency ${observed[i]}, expected ${p} ± ${tolerance}`);
  });
}

test('at temperature 1 token frequencies over 20k seeded draws match the distribution', (t) => {
  const probs = [0.1, 0.2, 0.3, 0.4];
  const draws = 20_000;
  assertClose(frequencies(probs, { temperature: 1 }, forkStream(testSeed(t), 0), draws), probs, draws);
});

test('temperature, top-k and top-p reshape the sampled distribution as defined', (t) => {
  const probs = [0.1, 0.2, 0.3, 0.4];
  const draws = 20_000;
  const rng = forkStream(testSeed(t), 1);
  const squared = probs.map((p) => p * p);
  const squaredTotal = squared.reduce((a, b) => a + b, 0);
  assertClose(frequencies(probs, { temperature: 0.5 }, rng, draws), squared.map((p) => p / squaredTotal), draws);
  assertClose(frequencies(probs, { topK: 2 }, rng, draws), [0, 0, 3 / 7, 4 / 7], draws);
  assertClose(frequencies(probs, { topP: 0.8 }, rng, draws), [0, 2 / 9, 3 / 9, 4 / 9], draws);
  assertClose(frequencies(probs, { minP: 0.6 }, rng, draws), [0, 0, 3 / 7, 4 / 7], draws);
});

test('seeded sampling is reproducible per stream and independent of other sequences', (t) => {
  const seed = testSeed(t);
  const vocab = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i * 12.9898) * 4);
  const generate = (rng: Rng, interleaved?: Rng) =>
    Array.from({ length: 50 }, () => {
      if (interleaved) sampleToken(vocab.slice(), state({ topP: 0.9 }, { rng: interleaved }));
      return sampleToken(vocab.slice(), state({ topK: 100 }, { rng })).tokenId;
    });
  const first = generate(forkStream(seed, 0));
  assert.deepEqual(generate(forkStream(seed, 0)), first, 'same seed and stream, same tokens');
  assert.deepEqual(generate(forkStream(seed, 0), forkStream(seed + 1, 0)), first, 'other sequences in the batch change nothing');
  assert.notDeepEqual(generate(forkStream(seed, 1)), first, 'another stream gives other tokens');
});

test('logprobs come from the raw distribution, before penalties and truncation', () => {
  const raw = [2, 1, 0, -1];
  const logZ = Math.log(raw.reduce((s, x) => s + Math.exp(x), 0));
  const result = sampleToken(
    row(raw),
    state({ logprobs: 3, temperature: 0, repetitionPenalty: 100, topK: 1 }, { promptTokenIds: [0] }),
  );
  assert.equal(result.tokenId, 1, 'the penalty moved the choice');
  assert.ok(result.logprobs);
  assert.deepEqual(
    result.logprobs.top.map((t) => t.tokenId),
    [0, 1, 2],
  );
  result.logprobs.top.forEach((t) => assert.ok(Math.abs(t.logprob - (raw[t.tokenId] - logZ)) < 1e-6));
  assert.ok(Math.abs(result.logprobs.sampled.logprob - (1 - logZ)) < 1e-6);

  const none = sampleToken(row(raw), state({ logprobs: 0, temperature: 0 }));
  assert.deepEqual(none.logprobs?.top, []);
  assert.equal(none.logprobs?.sampled.tokenId, 0);
  assert.equal(sampleToken(row(raw), state({ temperature: 0 })).logprobs, undefined);
});

test('a row with nothing to sample is a backend error', () => {
  assert.throws(
    () => sampleToken(row([Number.NaN, -Infinity]), state({})),
    (error: unknown) => error instanceof KeelError && error.kind === 'backend',
  );
  assert.throws(
    () => sampleToken(row([0, 1]), state({ temperature: 0, minTokens: 1, stopTokenIds: [0] }, { eosTokenIds: [1] })),
    (error: unknown) => error instanceof KeelError && error.kind === 'backend',
  );
});
