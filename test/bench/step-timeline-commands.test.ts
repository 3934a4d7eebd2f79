import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { readResult } from '../../src/bench/result-file.ts';
import { keelOk } from '../helpers/keel-cli.ts';

/** bin/keel on the CPU backend over a 2-layer fixture, as test/bench/bench-commands.test.ts runs it. */
const MODEL = ['--model', 'test/fixtures/llama-gqa', '--backend', 'cpu', '--no-progress'];
const dir = mkdtempSync(join(tmpdir(), 'keel-step-timeline-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const readLines = (path: string) =>
  readFileSync(path, 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown> & { step: number; kind: string; prefill_tokens: number; decode_rows: number; verify_tokens: number; batch_size: number; device: Record<string, number> | null });

test('bench throughput --step-timeline: a line per engine step of the measured run, summed in the result', async () => {
  const [output, file] = [join(dir, 'throughput.json'), join(dir, 'throughput.jsonl')];
  // Five prompts of 8 tokens fit one prefill step; each then decodes its 3 further tokens together.
  const run = await keelOk(['bench', 'throughput', ...MODEL, '--num-prompts', '5', '--input-len', '8', '--output-len', '4', '--num-iters-warmup', '1', '--step-timeline', file, '--output', output]);
  assert.match(run.stdout, /Step timeline \(4 steps, 4 launched, [\d.]+ ms; .*throughput\.jsonl\):\n  device busy/);
  const result = readResult(output);
  if (result.suite !== 'throughput' || !result.results?.step_timeline) throw new Error('expected a throughput result with a step timeline');
  const summary = result.results.step_timeline;
  const lines = readLines(file);
  assert.deepEqual(lines.map((l) => [l.run, l.step, l.kind, l.batch_size]), [[0, 0, 'prefill', 5], [0, 1, 'decode', 5], [0, 2, 'decode', 5], [0, 3, 'decode', 5]]);
  assert.equal(summary.steps, lines.length);
  assert.equal(summary.file, file);
  const sum = (key: 'prefill_tokens' | 'decode_rows' | 'verify_tokens') => lines.reduce((n, l) => n + l[key], 0);
  assert.equal(sum('prefill_tokens'), result.results.total_input_tokens);
  assert.equal(sum('decode_rows'), result.results.total_output_tokens - result.results.num_requests);
  assert.deepEqual(summary.by_kind.map((k) => [k.kind, k.steps, k.prefill_tokens, k.decode_rows]), [['prefill', 1, 40, 0], ['decode', 3, 0, 15]]);
  // The summary sums the lines (rounded there to 0.1 µs).
  const busy = lines.reduce((t, l) => t + l.device!.prepare_ms + l.device!.forward_ms + l.device!.sampling_ms, 0);
  assert.ok(Math.abs(summary.device_busy_ms - busy) < 1e-3, `${summary.device_busy_ms} ms against ${busy} ms`);
  assert.ok(summary.wall_ms <= result.results.elapsed_s * 1000 && summary.device_busy_ms <= summary.wall_ms);
});

test('bench latency --step-timeline: each batch size\'s measured iterations, its lines tagged with the batch size', async () => {
  const [output, file] = [join(dir, 'latency.json'), join(dir, 'latency.jsonl')];
  await keelOk(['bench', 'latency', ...MODEL, '--batch-size', '1,3', '--input-len', '8', '--output-len', '3', '--num-iters', '2', '--num-iters-warmup', '1', '--step-timeline', file, '--output', output]);
  const result = readResult(output);
  if (result.suite !== 'latency' || !result.results) throw new Error('expected a latency result');
  const lines = readLines(file);
  for (const row of result.results.batches) {
    const mine = lines.filter((l) => l.latency_batch_size === row.batch_size);
    // Two iterations of a prefill step and two decode steps each.
    assert.equal(mine.length, 6);
    assert.equal(row.step_timeline?.steps, 6);
    assert.ok(mine.every((l) => l.batch_size === row.batch_size));
    assert.equal(mine.reduce((n, l) => n + l.prefill_tokens, 0), 2 * row.batch_size * 8);
  }
});

test('without --step-timeline a result has no step_timeline', async () => {
  const output = join(dir, 'plain.json');
  await keelOk(['bench', 'throughput', ...MODEL, '--num-prompts', '2', '--input-len', '8', '--output-len', '2', '--output', output]);
  const result = readResult(output);
  if (result.suite !== 'throughput' || !result.results) throw new Error('expected a throughput result');
  assert.equal('step_timeline' in result.results, false);
});
