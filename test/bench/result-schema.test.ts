import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { readResult, writeResult } from '../../src/bench/result-file.ts';
import { BenchResultSchema, type BenchResult } from '../../src/bench/result-schema.ts';
import { KeelError } from '../../src/errors.ts';

/** The results this project publishes, in its checkout. */
const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url));
const committed = readdirSync(RESULTS_DIR).filter((f) => f.endsWith('.json'));

test('every committed result matches the schema', () => {
  assert.ok(committed.length > 0, 'bench/results/ has results');
  for (const file of committed) {
    const result = readResult(join(RESULTS_DIR, file));
    assert.ok(result.git_commit === null || /^[0-9a-f]{40}$/.test(result.git_commit), file);
  }
});

function sample(): BenchResult {
  return readResult(join(RESULTS_DIR, committed.find((f) => f.startsWith('throughput-')) as string));
}

test('a result without a device, with an unknown key, or ok without figures is refused', () => {
  const { device: _device, ...noDevice } = sample();
  assert.equal(BenchResultSchema.safeParse(noDevice).success, false);
  assert.equal(BenchResultSchema.safeParse({ ...sample(), extra: 1 }).success, false);
  assert.equal(BenchResultSchema.safeParse({ ...sample(), results: null }).success, false);
  assert.equal(BenchResultSchema.safeParse({ ...sample(), status: 'failed', error: 'out of memory', results: null }).success, true);
  assert.equal(BenchResultSchema.safeParse({ ...sample(), date: 'yesterday' }).success, false);
});

test('a linear result holds figures of the known formats and kernels only', () => {
  const figure = { op: 'linear', n: 4096, k: 4096, rows: 1, format: 'int4', path: 'gemv', us: 9.5, weight_bytes: 8519680, gb_per_s: 897, tflops: 3.5, speedup_vs_bf16: 2.9 };
  const linear = { ...sample(), suite: 'linear', config: {}, results: { figures: [figure], read_gb_per_s: 4400 } };
  assert.equal(BenchResultSchema.safeParse(linear).success, true);
  assert.equal(BenchResultSchema.safeParse({ ...linear, results: { ...linear.results, figures: [{ ...figure, format: 'nf4' }] } }).success, true);
  assert.equal(BenchResultSchema.safeParse({ ...linear, results: { ...linear.results, figures: [{ ...figure, format: 'fp4' }] } }).success, false);
  assert.equal(BenchResultSchema.safeParse({ ...linear, results: { ...linear.results, figures: [{ ...figure, path: 'marlin' }] } }).success, true);
  assert.equal(BenchResultSchema.safeParse({ ...linear, results: { ...linear.results, figures: [{ ...figure, path: 'machete' }] } }).success, false);
});

test('writeResult checks before writing; readResult names the file and the field it rejects', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-results-'));
  try {
    const path = writeResult(sample(), join(dir, 'r.json'));
    assert.deepEqual(JSON.parse(readFileSync(path, 'utf8')), sample());
    assert.throws(() => writeResult({ ...sample(), status: 'bogus' } as unknown as BenchResult, join(dir, 'bad.json')));
    assert.throws(() => readResult(join(dir, 'missing.json')), KeelError);
    const broken = JSON.parse(readFileSync(path, 'utf8'));
    delete broken.results.output_tokens_per_s;
    writeFileSync(join(dir, 'broken.json'), JSON.stringify(broken));
    assert.throws(() => readResult(join(dir, 'broken.json')), /broken\.json is not a benchmark result: results\.output_tokens_per_s/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Runs Python with tools/peers on its path; null when there is no python3. */
function python(code: string): string | null {
  const run = spawnSync('python3', ['-c', code], { encoding: 'utf8', env: { ...process.env, PYTHONPATH: 'tools/peers' } });
  if (run.error) return null;
  assert.equal(run.status, 0, run.stderr);
  return run.stdout;
}

test('the peers\' Python writes the same schema: a failed llama.cpp run, an HF latency row, an HF throughput', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-peer-results-'));
  try {
    const ran = spawnSync('python3', ['tools/peers/bench_result.py', 'llama-bench', '--model-dir', 'bench/configs/llama-3.1-8b', '--failed', 'no GPU here', '--out-dir', dir], { encoding: 'utf8' });
    if (ran.error) return t.skip('python3 is not installed');
    assert.equal(ran.status, 0, ran.stderr);
    const [file] = readdirSync(dir);
    const failed = readResult(join(dir, file));
    assert.equal(failed.status, 'failed');
    assert.equal(failed.error, 'no GPU here');
    assert.equal(failed.model?.parameter_count, 8_030_261_248);

    const latency = python(`
import json, types, bench_result, hf_peers
c = json.load(open('bench/configs/llama-3.1-8b/config.json'))
a = types.SimpleNamespace(latency_input_len=128, latency_output_len=256, bandwidth_gbps=3350.0)
res = hf_peers.latency_results([(20.0, 1900.0), (22.0, 1950.0)], a, c, bench_result.parameter_count(c))
print(json.dumps(bench_result.result('latency', 'hf-eager', bench_result.device('cuda', 'NVIDIA H100 80GB HBM3', '13.0'),
    bench_result.model_info('bench/configs/llama-3.1-8b', c, bench_result.parameter_count(c)), {'seed': 0}, {'torch': '2.11'}, res)))
`);
    const row = BenchResultSchema.parse(JSON.parse(latency as string));
    assert.equal(row.suite, 'latency');
    if (row.suite !== 'latency' || !row.results) throw new Error('expected latency results');
    const batch = row.results.batches[0];
    assert.ok(Math.abs((batch.mean_tpot_ms as number) - ((1880 / 255 + 1928 / 255) / 2)) < 1e-9);
    assert.ok(batch.roofline?.fraction !== null && (batch.roofline?.fraction as number) > 0);

    const throughput = python(`
import json, bench_result, hf_peers
reqs = bench_result.random_requests(4, (8, 8), (4, 4), 100, 0)
res = hf_peers.throughput_results(reqs, 16, 2.0)
print(json.dumps(bench_result.result('throughput', 'hf-generate-batch', bench_result.device('cuda'), None, {}, {}, res)))
`);
    const tp = BenchResultSchema.parse(JSON.parse(throughput as string));
    assert.deepEqual(tp.results, {
      workload: 'random',
      num_requests: 4,
      elapsed_s: 2,
      total_input_tokens: 32,
      total_output_tokens: 16,
      requests_per_s: 2,
      input_tokens_per_s: 16,
      output_tokens_per_s: 8,
      total_tokens_per_s: 24,
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('llama-batched-bench results from the peers\' Python match the schema, and a missing combination fails the run', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-batched-bench-'));
  try {
    // As llama-batched-bench --output-format jsonl prints it: log lines, then one row per combination.
    const row = (pl: number, tTg: number) =>
      JSON.stringify({ n_kv_max: 16384, n_batch: 2048, n_ubatch: 512, flash_attn: 1, is_pp_shared: 0, n_gpu_layers: 99, n_threads: 16,
        n_threads_batch: 16, pp: 128, tg: 128, pl, n_kv: pl * 256, t_pp: 0.5, speed_pp: (pl * 128) / 0.5, t_tg: tTg,
        speed_tg: (pl * 128) / tTg, t: 0.5 + tTg, speed: (pl * 256) / (0.5 + tTg) });
    writeFileSync(join(dir, 'out.jsonl'), ['main: loading model', row(1, 0.64), row(64, 1.28), ''].join('\n'));
    const record = (args: string, out: string) =>
      spawnSync('python3', ['tools/peers/bench_result.py', 'llama-batched-bench', '--model-dir', 'bench/configs/llama-3.1-8b', '--jsonl', join(dir, 'out.jsonl'),
        '--args', args, '--backend', 'cpu', '--out-dir', join(dir, out)], { encoding: 'utf8' });
    const ran = record('-npp 128 -ntg 128 -npl 1,64 -fa on', 'ok');
    if (ran.error) return t.skip('python3 is not installed');
    assert.equal(ran.status, 0, ran.stderr);
    const ok = readResult(join(dir, 'ok', readdirSync(join(dir, 'ok'))[0]));
    if (ok.suite !== 'llama-batched-bench' || !ok.results) throw new Error('expected llama-batched-bench results');
    assert.equal(ok.engine, 'llama.cpp');
    assert.equal(ok.model?.dtype, 'f16');
    assert.equal(ok.config.args, '-npp 128 -ntg 128 -npl 1,64 -fa on');
    assert.deepEqual(ok.results.runs.map((r) => [r.sequences, r.decode_tokens_per_s, r.decode_ms_per_step]), [[1, 200, 5], [64, 6400, 10]]);

    assert.equal(record('-npp 128 -ntg 128 -npl 1,16,64', 'missing').status, 0);
    const failed = readResult(join(dir, 'missing', readdirSync(join(dir, 'missing'))[0]));
    assert.equal(failed.status, 'failed');
    assert.match(failed.error as string, /no row for \(pp, tg, pl\) \[\(128, 128, 16\)\]/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
