import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertGreedyMatches, logitsFailure, logitTolerance, type ParityOptions } from './helpers/transformers-parity.ts';
import { traceBackend } from '../scripts/backend-comparison.ts';
import { listOracleFixtures, maxAbsDiff } from './helpers/oracle-fixtures.ts';

// What the CUDA parity suite accepts from a bf16 backend where rounding flips a near-tie the way
// transformers' own bfloat16 run does (oracle.json's bf16_last_logits and bf16_greedy), on
// DeepSeek-V3.2's fixture: its MoE and index top-k ties sit closer than bf16 resolves, and on the
// H200 CUDA took transformers' bf16 flips (docs/cuda-backend.md).

const fixture = listOracleFixtures().find((f) => f.name === 'deepseek-v32')!;
const { oracle } = fixture;
const CUDA: ParityOptions = { backend: 'cuda', logitTolerance: 0.125, acceptBf16ReferenceError: true, greedy: 'top-candidates' };
const CPU: ParityOptions = { backend: 'cpu', logitTolerance: 1e-4, greedy: 'exact' };

test('the oracle\'s bf16 run: its logits lie bf16_max_abs_dlogit from the float32 ones, and its greedy path leaves theirs somewhere', () => {
  assert.ok(oracle.bf16_last_logits && oracle.bf16_greedy && oracle.bf16_max_abs_dlogit, 'deepseek-v32\'s oracle has the bf16 run');
  oracle.bf16_last_logits.forEach((row, i) => {
    const drift = maxAbsDiff(row, oracle.last_logits[i]);
    assert.ok(Math.abs(drift - oracle.bf16_max_abs_dlogit![i]) <= 1e-3 * drift + 1e-5, `prompt ${i}: ${drift} vs ${oracle.bf16_max_abs_dlogit![i]}`);
  });
  assert.ok(oracle.bf16_greedy.some((path, i) => path.some((token, s) => token !== oracle.greedy[i][s])));
});

test('a greedy path leaving the float32 one where transformers\' bf16 run does, with its token, is accepted from a bf16 backend only', () => {
  const bf16Greedy = oracle.bf16_greedy!;
  // Each prompt whose bf16 path departs with a token the top-candidates rule alone refuses (twice the logit tolerance below the best).
  const departures = bf16Greedy.flatMap((path, prompt) => {
    const step = path.findIndex((token, s) => token !== oracle.greedy[prompt][s]);
    if (step === -1) return [];
    const candidates = oracle.greedy_top_logprobs![prompt][step];
    const allowance = 2 * logitTolerance(fixture, prompt, CUDA);
    const below = (token: number) => candidates[0][1] - (candidates.find(([t]) => t === token)?.[1] ?? -Infinity);
    return below(path[step]) > allowance ? [{ prompt, step, candidates, allowance, below }] : [];
  });
  assert.ok(departures.length > 0, 'the fixture has a bf16 departure the top-candidates rule refuses (prompt 2, step 5 when generated)');
  for (const { prompt, step, candidates, allowance, below } of departures) {
    const path = bf16Greedy[prompt];
    assertGreedyMatches(path, fixture, prompt, CUDA);
    assert.throws(() => assertGreedyMatches(path, fixture, prompt, CPU), /prompt/);
    // Another token that far below the best at that step is still refused.
    const other = candidates.find(([token]) => token !== path[step] && below(token) > allowance);
    assert.ok(other, `prompt ${prompt} step ${step} lists another candidate beyond ${allowance}`);
    const elsewhere = [...path.slice(0, step), other[0], ...path.slice(step + 1)];
    assert.throws(() => assertGreedyMatches(elsewhere, fixture, prompt, CUDA), /is not within/);
  }
});

test('logits beyond the float32 tolerance are accepted from a bf16 backend when they lie near transformers\' bf16 logits, not otherwise', () => {
  const prompt = oracle.bf16_max_abs_dlogit!.indexOf(Math.max(...oracle.bf16_max_abs_dlogit!));
  const fp32 = oracle.last_logits[prompt];
  const bf16 = oracle.bf16_last_logits![prompt];
  // transformers' bf16 logits moved 0.03 further from the float32 ones where they differ most: a bf16 engine that took its flips.
  const worst = bf16.reduce((w, v, i) => (Math.abs(v - fp32[i]) > Math.abs(bf16[w] - fp32[w]) ? i : w), 0);
  const flipped = bf16.map((v, i) => (i === worst ? v + 0.03 * Math.sign(v - fp32[i]) : v));
  assert.ok(maxAbsDiff(flipped, fp32) > oracle.bf16_max_abs_dlogit![prompt], 'beyond transformers\' own bf16 error');
  assert.equal(logitsFailure(flipped, fixture, prompt, CUDA), null);
  assert.match(logitsFailure(flipped, fixture, prompt, CPU)!, new RegExp(`^prompt ${prompt}: max \\|Δlogit\\|`));
  // The same distance from the float32 logits, away from the bf16 ones: refused, naming both distances.
  const elsewhere = fp32.map((v, i) => (i === worst ? v - (flipped[i] - v) : v));
  assert.match(logitsFailure(elsewhere, fixture, prompt, CUDA)!, /from transformers' bf16 logits/);
});

test("logits as far from the float32 ones as the bf16 twin's are accepted from a bf16 backend, with the tolerance's slack and no more", async () => {
  // llama4-text's prompt 2: bf16 at Keel's rounding points flips an expert choice transformers' bf16 run keeps.
  const llama4 = listOracleFixtures().find((f) => f.name === 'llama4-text')!;
  const prompt = 2;
  const fp32 = llama4.oracle.last_logits[prompt];
  const twin = (await traceBackend(llama4.dir, 'cpu-bf16', llama4.oracle.prompts, { ops: false })).logits[prompt];
  const twinDiff = maxAbsDiff(twin, fp32);
  const tolerance = logitTolerance(llama4, prompt, CUDA);
  assert.ok(twinDiff > tolerance, `the twin (${twinDiff}) departs beyond the tolerance (${tolerance})`);
  assert.notEqual(logitsFailure(twin, llama4, prompt, CUDA), null, 'without the twin its departure fails');
  assert.equal(logitsFailure(twin, llama4, prompt, CUDA, twin), null);
  // Error of a kernel's own on top of the twin's: refused, naming the twin's distance.
  const worst = twin.reduce((w, v, i) => (Math.abs(v - fp32[i]) > Math.abs(twin[w] - fp32[w]) ? i : w), 0);
  const beyond = twin.map((v, i) => (i === worst ? v + 1.5 * tolerance * Math.sign(v - fp32[i]) : v));
  assert.match(logitsFailure(beyond, llama4, prompt, CUDA, twin)!, /beyond the bf16 twin's/);
  // A float32 backend is never given the twin's allowance.
  assert.match(logitsFailure(twin, llama4, prompt, CPU, twin)!, new RegExp(`^prompt ${prompt}: max \\|Δlogit\\|`));
});
