import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import { scoreDraw, type Draw, type DrawResults } from '../../../src/sampling/draw.ts';
import { allowedMask, logitBias, penaltyEntries, testDraw } from '../../helpers/sampling-draw.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import { floatToBf16Bits } from '../../../src/tensor/host-dtype.ts';
import { bf16Tensor, bf16Value, randomBf16Values, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { randInt, testSeed } from '../../helpers/gpu-test-support.ts';

// The GPU's sampling pass against its CPU twin (src/sampling/draw-sampler.ts) on the same bf16
// logits and draws. Greedy draws and the penalties' float32 arithmetic match exactly; random draws
// may differ where logf's rounding of the Gumbel noise (or the order of a top-p sum) decides.

const rng = seededRng(testSeed('cuda sampling'));
const gpu = new CudaBackend({ arenaBytes: 16 * 1024 * 1024 });
const cpu = new CpuBackend();
after(() => gpu.dispose());

function logits(rows: number, cols: number, values: Float32Array): { cpu: Tensor; gpu: Tensor } {
  const t = bf16Tensor([rows, cols], values);
  return { cpu: cpu.loadWeight(t), gpu: gpu.loadWeight(t) };
}

function both(x: { cpu: Tensor; gpu: Tensor }, draws: Draw[]): { gpu: DrawResults; cpu: DrawResults } {
  return { gpu: gpu.sampleRows(x.gpu, draws).read(), cpu: cpu.sampleRows(x.cpu, draws).read() };
}

function agreeing(a: Int32Array, b: Int32Array): number {
  return a.filter((t, i) => t === b[i]).length;
}

function assertLogprobsClose(results: { gpu: DrawResults; cpu: DrawResults }, what: string): void {
  // A row with nothing finite has NaN logprobs (-inf minus -inf) on both backends.
  const close = (a: number, b: number) => Object.is(a, b) || Math.abs(a - b) < 2e-3;
  results.cpu.logprobs.forEach((l, d) => assert.ok(close(l, results.gpu.logprobs[d]), `${what}: draw ${d} logprob ${results.gpu.logprobs[d]} vs ${l}`));
  results.cpu.topLogprobs.forEach((l, i) => assert.ok(close(l, results.gpu.topLogprobs[i]), `${what}: top logprob ${i}: ${results.gpu.topLogprobs[i]} vs ${l}`));
}

const seed = () => Math.floor(rng() * 2 ** 32);

/** A pass of greedy and random draws against the CPU's: greedy ones equal, all but two random ones too, the raw top logprobs equal. */
function assertMixedDrawsMatch(results: { gpu: DrawResults; cpu: DrawResults }, draws: Draw[], what: string): void {
  draws.forEach((d, i) => {
    if (d.temperature === 0) assert.equal(results.gpu.tokenIds[i], results.cpu.tokenIds[i], `${what}: greedy draw ${i}`);
  });
  const agree = agreeing(results.gpu.tokenIds, results.cpu.tokenIds);
  assert.ok(agree >= draws.length - 2, `${what}: ${agree} of ${draws.length} draws agree`);
  assert.deepEqual([...results.gpu.topIds], [...results.cpu.topIds], `${what}: top logprobs describe the raw row`);
  assertLogprobsClose(results, what);
}


test('greedy draws and top logprobs match the CPU: ties to the lowest index, -1 for rows with nothing finite', () => {
  for (const cols of [7, 1000, 1003, 128256, 152064]) {
    const rows = randInt(rng, 2, 9);
    const values = randomBf16Values(rng, rows * cols, 4);
    // Ties at the maximum in row 0 (for the argmax and the top logprobs); the last row all -inf.
    values[3 % cols] = 100;
    values[cols - 1] = 100;
    values[(5 % cols) + cols] = 50;
    values.fill(-Infinity, (rows - 1) * cols, rows * cols);
    const draws = Array.from({ length: rows }, (_, row) => testDraw({ row, temperature: 0, topLogprobs: row % 3 === 0 ? 5 : 0 }));
    const results = both(logits(rows, cols, values), draws);
    assert.deepEqual([...results.gpu.tokenIds], [...results.cpu.tokenIds], `${rows}x${cols}`);
    assert.equal(results.gpu.topWidth, 5);
    assert.deepEqual([...results.gpu.topIds], [...results.cpu.topIds], `${rows}x${cols} top ids`);
    assertLogprobsClose(results, `${rows}x${cols}`);
  }
});

test('scored draws report their token, its raw logprob and the top alternatives as the CPU does', () => {
  for (const cols of [1000, 152064]) {
    const rows = randInt(rng, 1, 40);
    const values = randomBf16Values(rng, rows * cols, 4);
    const draws = Array.from({ length: rows }, (_, row) => scoreDraw(row, randInt(rng, 0, cols - 1), row % 2 === 0 ? 5 : 0));
    const results = both(logits(rows, cols, values), draws);
    assert.deepEqual([...results.gpu.tokenIds], draws.map((d) => d.scoredToken), `${rows}x${cols}`);
    assert.deepEqual([...results.gpu.topIds], [...results.cpu.topIds], `${rows}x${cols} top ids`);
    assertLogprobsClose(results, `scored ${rows}x${cols}`);
  }
});

test('penalties, masks and pending tokens change greedy draws exactly as on the CPU', () => {
  for (const cols of [1000, 152064]) {
    const rows = 12;
    const values = randomBf16Values(rng, rows * cols, 2);
    // A first pass leaves known tokens where the second pass's pending reads find them.
    const first = Array.from({ length: rows }, (_, row) => testDraw({ row, temperature: 0 }));
    const x = logits(rows, cols, values);
    const previous = both(x, first);
    assert.deepEqual([...previous.gpu.tokenIds], [...previous.cpu.tokenIds]);
    const topOf = (row: number, n: number) =>
      Array.from(values.subarray(row * cols, (row + 1) * cols).keys())
        .sort((a, b) => values[row * cols + b] - values[row * cols + a])
        .slice(0, n);
    const draws = Array.from({ length: rows }, (_, row) => {
      // Penalize the row's leading tokens, so that the penalties decide the argmax.
      const leaders = topOf(row, 6);
      const listed = leaders.slice(0, 4).map((id, i): [number, number] => [id, i % 3]);
      return testDraw({
        row,
        temperature: 0,
        repetitionPenalty: 1 + (row % 4) * 0.4,
        presencePenalty: (row % 3) * 0.3,
        frequencyPenalty: (row % 2) * 0.25,
        ...penaltyEntries(listed),
        maskedTokenIds: row % 2 === 0 ? Int32Array.of(leaders[4]) : Int32Array.of(leaders[0], leaders[5]),
        pendingDraw: row % 3 === 2 ? -1 : (row + 1) % rows,
        topLogprobs: 2,
      });
    });
    const results = both(x, draws);
    assert.deepEqual([...results.gpu.tokenIds], [...results.cpu.tokenIds], `${cols} columns`);
    assert.deepEqual([...results.gpu.topIds], [...results.cpu.topIds], 'top logprobs describe the raw row');
    assertLogprobsClose(results, `${cols} columns`);
    const unpenalized = both(x, draws.map((d) => testDraw({ row: d.row, temperature: 0 })));
    assert.ok(agreeing(results.gpu.tokenIds, unpenalized.gpu.tokenIds) < rows, 'the penalties changed some draws');
  }
});

test('random draws with min-p, top-k, top-p and penalties draw what the CPU draws for the same seeds', () => {
  for (const cols of [5000, 152064]) {
    const rows = 48;
    const x = logits(rows, cols, randomBf16Values(rng, rows * cols, 6));
    const draws = Array.from({ length: rows }, (_, row) =>
      testDraw({
        row,
        seed: seed(),
        temperature: 0.5 + (row % 4) * 0.25,
        topK: [0, 1, 40, 1000][row % 4],
        topP: [1, 0.9, 0.5, 0.95][(row >> 2) % 4],
        minP: [0, 0, 0.05, 0.2][(row >> 4) % 3],
        presencePenalty: row % 5 === 0 ? 0.5 : 0,
        ...(row % 5 === 0 ? penaltyEntries([[row, 1], [row + 7, 3]]) : {}),
      }),
    );
    const results = both(x, draws);
    const agree = agreeing(results.gpu.tokenIds, results.cpu.tokenIds);
    assert.ok(agree >= rows - 2, `${cols} columns: ${agree} of ${rows} draws agree`);
    assertLogprobsClose(results, `${cols} columns`);
    assert.deepEqual([...gpu.sampleRows(x.gpu, draws).read().tokenIds], [...results.gpu.tokenIds], 'the same pass draws the same tokens again');
  }
});

test('a structured output\'s allowed-token mask limits greedy and random draws as on the CPU, leaving the raw logprobs alone', () => {
  for (const cols of [1000, 128256, 152064]) {
    const rows = 24;
    const values = randomBf16Values(rng, rows * cols, 4);
    const x = logits(rows, cols, values);
    // Row by row: a mask of a few tokens (a JSON grammar's "{" or digits), of half the vocabulary,
    // of one token, and none; with penalties, masked ids and top-k/top-p on some rows.
    const masks = Array.from({ length: rows }, (_, row) => {
      if (row % 4 === 3) return null;
      const size = [randInt(rng, 2, 12), Math.floor(cols / 2), 1][row % 4];
      return allowedMask(cols, Array.from({ length: size }, () => randInt(rng, 0, cols - 1)));
    });
    const draws = masks.map((allowedTokens, row) =>
      testDraw({
        row,
        allowedTokens,
        temperature: row % 3 === 0 ? 0 : 0.8,
        seed: seed(),
        topK: row % 5 === 1 ? 20 : 0,
        topP: row % 5 === 2 ? 0.9 : 1,
        repetitionPenalty: row % 6 === 0 ? 1.3 : 1,
        ...(row % 6 === 0 ? penaltyEntries([[row, 0]]) : {}),
        topLogprobs: 3,
      }),
    );
    const results = both(x, draws);
    results.gpu.tokenIds.forEach((t, d) => {
      const mask = masks[d];
      assert.ok(mask === null || ((mask[t >>> 5] >>> (t & 31)) & 1) === 1, `${cols} columns: draw ${d} took token ${t}, outside its mask`);
    });
    assertMixedDrawsMatch(results, draws, `masked ${cols} columns`);
  }
});

test('logit biases change greedy and random draws exactly as on the CPU, with penalties, masks and truncation, leaving the raw logprobs alone', () => {
  for (const cols of [1000, 152064]) {
    const rows = 24;
    const values = randomBf16Values(rng, rows * cols, 4);
    const x = logits(rows, cols, values);
    // A first pass leaves known tokens where the pending reads of the penalized rows find them.
    both(x, Array.from({ length: rows }, (_, row) => testDraw({ row, temperature: 0 })));
    const leaders = (row: number) =>
      Array.from(values.subarray(row * cols, (row + 1) * cols).keys())
        .sort((a, b) => values[row * cols + b] - values[row * cols + a])
        .slice(0, 4);
    // Row by row: a ban of the leader, a boost of a token far down, both; a biased token that is
    // also penalized, masked, pending or outside an allowed mask; greedy and random, truncated.
    const draws = Array.from({ length: rows }, (_, row) => {
      const [top, second, third] = leaders(row);
      const low = (row * 7919) % cols;
      const choices: [number, number][] = [[top, -100], [low, 5 + (row % 3)], [second, -0.5]];
      const biases = [choices[row % 3]];
      if (row % 4 === 1) biases.push([third, 1.25]);
      return testDraw({
        row,
        temperature: row % 2 === 0 ? 0 : 0.7,
        seed: seed(),
        topK: row % 6 === 1 ? 10 : 0,
        topP: row % 6 === 3 ? 0.9 : 1,
        ...logitBias(biases),
        repetitionPenalty: row % 5 === 0 ? 1.3 : 1,
        presencePenalty: row % 5 === 0 ? 0.4 : 0,
        ...(row % 5 === 0 ? penaltyEntries([[second, 1], [top, 0]]) : {}),
        pendingDraw: row % 5 === 0 ? row : -1,
        maskedTokenIds: row % 7 === 3 ? Int32Array.of(low) : new Int32Array(0),
        allowedTokens: row % 8 === 5 ? allowedMask(cols, [top, second, low]) : null,
        topLogprobs: 3,
      });
    });
    const results = both(x, draws);
    assertMixedDrawsMatch(results, draws, `biased ${cols} columns`);
    const unbiased = both(x, draws.map((d) => ({ ...d, logitBias: null, pendingDraw: -1 })));
    assert.ok(agreeing(results.gpu.tokenIds, unbiased.gpu.tokenIds) < rows, 'the biases changed some draws');
  }
});

test('draws under a mask follow the softmax renormalized over the allowed tokens', () => {
  const probs = [0.1, 0.2, 0.3, 0.4];
  const cols = 4096;
  const values = new Float32Array(cols).fill(-Infinity);
  probs.forEach((p, i) => (values[i * 1000] = bf16Value(floatToBf16Bits(Math.log(p)))));
  const x = logits(1, cols, values);
  const mask = allowedMask(cols, [0, 2000, 3000, 7]);
  const weights = [Math.exp(values[0]), 0, Math.exp(values[2000]), Math.exp(values[3000])];
  const total = weights.reduce((a, b) => a + b, 0);
  const draws = 4000;
  const tokens = gpu.sampleRows(x.gpu, Array.from({ length: draws }, (_, i) => testDraw({ allowedTokens: mask, seed: i * 7919 + 1 }))).read().tokenIds;
  weights.forEach((w, i) => {
    const expected = w / total;
    const seen = tokens.filter((t) => t === i * 1000).length / draws;
    const tolerance = 5 * Math.sqrt((expected * (1 - expected)) / draws) + 1e-3;
    assert.ok(Math.abs(seen - expected) <= tolerance, `token ${i * 1000}: ${seen} vs ${expected}`);
  });
});

test('many draws of one row follow softmax(logits / T) after top-k, top-p and min-p', () => {
  const probs = [0.1, 0.2, 0.3, 0.4];
  const cols = 4096;
  const values = new Float32Array(cols).fill(-Infinity);
  probs.forEach((p, i) => (values[i * 1000] = bf16Value(floatToBf16Bits(Math.log(p)))));
  const x = logits(1, cols, values);
  const weights = probs.map((_, i) => Math.exp(values[i * 1000]));
  const cases: [Partial<Draw>, number[]][] = [
    [{}, weights],
    [{ topK: 2 }, [0, 0, weights[2], weights[3]]],
    [{ topP: 0.8 }, [0, weights[1], weights[2], weights[3]]],
    [{ minP: 0.6 }, [0, 0, weights[2], weights[3]]],
    [{ temperature: 0.5 }, weights.map((w) => w * w)],
  ];
  const draws = 4000;
  for (const [fields, expectedWeights] of cases) {
    const total = expectedWeights.reduce((a, b) => a + b, 0);
    const tokens = gpu.sampleRows(x.gpu, Array.from({ length: draws }, (_, i) => testDraw({ ...fields, seed: i * 7919 + 1 }))).read().tokenIds;
    assert.ok(tokens.every((t) => t % 1000 === 0 && t < 4000), `${JSON.stringify(fields)}: only the finite columns are drawn`);
    expectedWeights.forEach((w, i) => {
      const expected = w / total;
      const seen = tokens.filter((t) => t === i * 1000).length / draws;
      const tolerance = 5 * Math.sqrt((expected * (1 - expected)) / draws) + 1e-3;
      assert.ok(Math.abs(seen - expected) <= tolerance, `${JSON.stringify(fields)} token ${i}: ${seen} vs ${expected}`);
    });
  }
});

test('drafting passes chained through the draft history penalize the drafts before each draw and draw what the CPU draws', () => {
  for (const cols of [1000, 152064]) {
    const rows = 10;
    const passes = 6;
    // Each row's leaders sit close together far above the rest: once drawn, a leader's penalty
    // hands the next draw to another, so every pass depends on the drafts before it.
    const leaders = (row: number) => [0, 1, 2, 3].map((i) => (row * 131 + i * 977) % cols);
    const history = (row: number) => (row < 5 ? row : 37 + 11 * row);
    const values = (active: number[]) => {
      const v = randomBf16Values(rng, active.length * cols, 2);
      active.forEach((row, d) => leaders(row).forEach((id, i) => (v[d * cols + id] = 8 - 0.25 * i)));
      return v;
    };
    const drawn: { gpu: number[]; cpu: number[] }[] = Array.from({ length: rows }, () => ({ gpu: [], cpu: [] }));
    for (let pass = 0; pass < passes; pass++) {
      // Rows 5.. join at pass 2, their history rows past what the first passes needed: the history grows, keeping its rows.
      const active = Array.from({ length: rows }, (_, row) => row).filter((row) => row < 5 || pass >= 2);
      const draws = active.map((row, d) =>
        testDraw({
          row: d,
          temperature: row % 3 === 2 ? 0.7 : 0,
          seed: 1000 * row + pass,
          repetitionPenalty: 1 + (row % 2) * 0.2,
          frequencyPenalty: 0.9 + (row % 4) * 0.1,
          presencePenalty: (row % 3) * 0.2,
          // The host lists a leader as an earlier output token of some rows.
          ...(row % 4 === 1 ? penaltyEntries([[leaders(row)[1], 1]]) : {}),
          draftHistoryRow: history(row),
          draftHistoryLength: row < 5 ? pass : pass - 2,
        }),
      );
      const x = logits(active.length, cols, values(active));
      const results = both(x, draws);
      active.forEach((row, d) => {
        drawn[row].gpu.push(results.gpu.tokenIds[d]);
        drawn[row].cpu.push(results.cpu.tokenIds[d]);
      });
    }
    drawn.forEach(({ gpu, cpu }, row) => assert.deepEqual(gpu, cpu, `${cols} columns: row ${row}'s drafts`));
    assert.ok(drawn.some(({ cpu }) => new Set(cpu).size > 2), 'the penalties moved draws off the first leaders');
  }
});

test('sampleRows rejects draws outside the logits or the previous pass', () => {
  const x = logits(2, 16, randomBf16Values(rng, 32));
  gpu.sampleRows(x.gpu, [testDraw({ temperature: 0 })]);
  assert.throws(() => gpu.sampleRows(x.gpu, [testDraw({ row: 2 })]), /draw 0 reads row 2, outside \[0, 2\)/);
  assert.throws(() => gpu.sampleRows(x.gpu, [testDraw({ pendingDraw: 1 })]), /pending token 1 is outside the 1 previous draws/);
  assert.throws(() => gpu.sampleRows(x.gpu, [testDraw({ maskedTokenIds: Int32Array.of(16) })]), /names token 16, outside the 16 columns/);
  assert.throws(() => gpu.sampleRows(x.gpu, [testDraw({ allowedTokens: new Int32Array(2) })]), /mask has 2 words, not the 1 of 16 columns/);
  assert.throws(() => gpu.sampleRows(x.gpu, [testDraw({ draftHistoryRow: 0, draftHistoryLength: 64 })]), /follows 64 drafts in the draft history, which holds 64 per row/);
});
