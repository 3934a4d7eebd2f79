import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { benchProgress } from '../../src/bench/progress.ts';
import { LLM } from '../../src/engine/llm.ts';
import { randomRequests } from '../../src/bench/random-dataset.ts';
import { readResult } from '../../src/bench/result-file.ts';
import { startTinyServer } from '../server/tiny-server.ts';
import { keel, keelOk } from '../helpers/keel-cli.ts';

/** End to end through bin/keel on the CPU backend, over a 2-layer fixture without a tokenizer (token-id workloads). */
const MODEL = ['--model', 'test/fixtures/llama-gqa', '--backend', 'cpu', '--no-progress'];
const FIXTURE_VOCAB = 256;
const dir = mkdtempSync(join(tmpdir(), 'keel-bench-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('bench latency: one row per batch size, every figure measured, the roofline against --bandwidth-gbps', async () => {
  const output = join(dir, 'latency.json');
  const run = await keelOk(['bench', 'latency', ...MODEL, '--batch-size', '1,2', '--input-len', '8', '--output-len', '3', '--num-iters', '2', '--num-iters-warmup', '1', '--bandwidth-gbps', '100', '--output', output]);
  assert.match(run.stdout, /batch 2: TTFT/);
  const result = readResult(output);
  if (result.suite !== 'latency' || !result.results) throw new Error('expected a latency result');
  assert.equal(result.engine, 'keel');
  assert.equal(result.device.backend, 'cpu');
  assert.equal(result.model?.name, 'llama-gqa');
  assert.equal(result.results.bandwidth_source, 'flag');
  assert.equal(result.results.bandwidth_bytes_per_s, 100e9);
  assert.deepEqual(result.results.batches.map((b) => b.batch_size), [1, 2]);
  for (const b of result.results.batches) {
    assert.equal(b.num_iters, 2);
    assert.ok((b.mean_ttft_ms as number) > 0 && (b.mean_tpot_ms as number) > 0);
    assert.ok((b.mean_e2el_ms as number) > (b.mean_ttft_ms as number));
    assert.ok((b.roofline?.fraction as number) > 0);
    assert.equal(b.preemptions, 0);
  }
});

test('bench latency counts the preemptions of the measured runs and, with --preemption-mode swap, those that swapped', async () => {
  const output = join(dir, 'latency-swap.json');
  // 4 sequences of 16 + 8 tokens need 24 blocks of 4; a 14-block pool preempts, and a context longer than
  // the 8-token step budget is swapped rather than recomputed (docs/long-context.md).
  const pool = ['--block-size', '4', '--num-kv-blocks', '14', '--max-num-batched-tokens', '8'];
  const run = await keelOk(['bench', 'latency', ...MODEL, ...pool, '--preemption-mode', 'swap', '--swap-space', '1', '--batch-size', '4', '--input-len', '16', '--output-len', '8', '--num-iters', '1', '--num-iters-warmup', '0', '--output', output]);
  assert.match(run.stdout, /\d+ preemptions \(\d+ swapped\)/);
  const result = readResult(output);
  if (result.suite !== 'latency' || !result.results) throw new Error('expected a latency result');
  const [row] = result.results.batches;
  assert.ok((row.preemptions as number) > 0 && (row.swaps as number) > 0 && (row.swaps as number) <= (row.preemptions as number), JSON.stringify(row));
});

test('bench latency --cpu-offload-gb: each row has the offloaded bytes a step copies (no host-to-device rate on the CPU backend)', async () => {
  const output = join(dir, 'latency-offload.json');
  await keelOk(['bench', 'latency', ...MODEL, '--batch-size', '1', '--input-len', '8', '--output-len', '3', '--num-iters', '1', '--num-iters-warmup', '0', '--cpu-offload-gb', '1', '--output', output]);
  const result = readResult(output);
  if (result.suite !== 'latency' || !result.results) throw new Error('expected a latency result');
  const offload = result.results.batches[0].offload;
  assert.ok(offload && offload.host_bytes_per_step > 0, 'every decoder layer of the fixture is offloaded');
  assert.equal(offload.host_to_device_bytes_per_s, null);
  assert.equal(offload.fraction, null);
});

test('bench latency and throughput report speculative decoding: the fixture drafting for itself has every draft accepted', async () => {
  const draft = ['--speculative-model', 'test/fixtures/llama-gqa', '--num-speculative-tokens', '2'];
  const latencyOutput = join(dir, 'latency-speculative.json');
  const run = await keelOk(['bench', 'latency', ...MODEL, ...draft, '--batch-size', '2', '--input-len', '8', '--output-len', '6', '--num-iters', '1', '--num-iters-warmup', '0', '--output', latencyOutput]);
  assert.match(run.stdout, /tokens per verification \(100\.0% of \d+ drafts accepted\)/);
  const latency = readResult(latencyOutput);
  if (latency.suite !== 'latency' || !latency.results) throw new Error('expected a latency result');
  assert.deepEqual((latency.config.engine as { speculative: unknown }).speculative, {
    method: 'draft',
    model: 'test/fixtures/llama-gqa',
    tree: null,
    numSpeculativeTokens: 2,
    ngramMin: 2,
    ngramMax: 4,
    ngramBranches: 1,
    treeWidth: 1,
    selfSpecLayers: null,
    disableByBatchSize: null,
    syntheticAcceptedDrafts: null,
  });
  // Two sequences of 6 tokens: the first from the prefill, the other five from verifications of
  // 2 drafts (3 tokens each) and then of 1 (the last token), all accepted.
  assert.deepEqual(latency.results.batches[0].speculation, {
    drafts: 4,
    draft_tokens: 6,
    accepted_tokens: 6,
    acceptance_rate: 1,
    mean_accepted_length: 2.5,
    acceptance_rate_by_position: [1, 1],
  });
  const throughputOutput = join(dir, 'throughput-speculative.json');
  await keelOk(['bench', 'throughput', ...MODEL, ...draft, '--num-prompts', '3', '--input-len', '8', '--output-len', '5', '--output', throughputOutput]);
  const throughput = readResult(throughputOutput);
  if (throughput.suite !== 'throughput' || !throughput.results) throw new Error('expected a throughput result');
  assert.equal(throughput.results.speculation?.acceptance_rate, 1);
  // A synthetic acceptance of 1 draft where the target would take both: labelled in the result.
  const syntheticOutput = join(dir, 'latency-synthetic.json');
  await keelOk(['bench', 'latency', ...MODEL, ...draft, '--synthetic-accepted-drafts', '1', '--batch-size', '2', '--input-len', '8', '--output-len', '6', '--num-iters', '1', '--num-iters-warmup', '0', '--output', syntheticOutput]);
  const synthetic = readResult(syntheticOutput);
  if (synthetic.suite !== 'latency' || !synthetic.results) throw new Error('expected a latency result');
  assert.equal(synthetic.config.synthetic_accepted_drafts, 1);
  assert.deepEqual(synthetic.results.batches[0].speculation?.acceptance_rate_by_position, [1, 0]);
});

test('bench latency --baseline reports each batch size\'s speedup over a run without speculation, here with an EAGLE-3 head tree', async () => {
  const shape = ['--batch-size', '1,2', '--input-len', '8', '--output-len', '6', '--num-iters', '1', '--num-iters-warmup', '0'];
  const baseline = join(dir, 'latency-baseline.json');
  await keelOk(['bench', 'latency', ...MODEL, ...shape, '--output', baseline]);
  const head = ['--speculative-method', 'eagle3', '--speculative-model', 'test/fixtures/spec-heads/eagle3-llama-gqa', '--speculative-tree-width', '2'];
  const output = join(dir, 'latency-eagle3.json');
  const run = await keelOk(['bench', 'latency', ...MODEL, ...head, ...shape, '--baseline', baseline, '--output', output]);
  assert.match(run.stdout, /tokens per verification .*, \d+\.\d\dx the baseline's TPOT/);
  const result = readResult(output);
  if (result.suite !== 'latency' || !result.results) throw new Error('expected a latency result');
  const before = readResult(baseline);
  if (before.suite !== 'latency' || !before.results) throw new Error('expected a latency result');
  result.results.batches.forEach((row, i) => {
    assert.ok(row.speculation !== null && row.speculation !== undefined && row.speculation.drafts > 0, 'the head drafted');
    assert.equal(row.speedup_vs_baseline, before.results!.batches[i].mean_tpot_ms! / row.mean_tpot_ms!);
  });
  assert.equal(result.config.baseline, baseline);
  const wrong = await keel(['bench', 'latency', ...MODEL, ...shape, '--baseline', join(dir, 'throughput-speculative.json')]);
  assert.match(wrong.stderr, /is not a successful latency result \(suite throughput/);
});

test('bench throughput: the seeded random dataset, every token generated', async () => {
  const output = join(dir, 'throughput.json');
  const run = await keelOk(['bench', 'throughput', ...MODEL, '--num-prompts', '6', '--input-len', '8', '--output-len', '4', '--random-range-ratio', '0.5', '--seed', '3', '--output', output]);
  assert.match(run.stdout, /requests\/s/);
  const result = readResult(output);
  if (result.suite !== 'throughput' || !result.results) throw new Error('expected a throughput result');
  const requests = randomRequests({ numPrompts: 6, inputLen: { min: 4, max: 12 }, outputLen: { min: 2, max: 6 }, vocabSize: FIXTURE_VOCAB, seed: 3 });
  assert.equal(result.results.num_requests, 6);
  assert.equal(result.results.total_input_tokens, requests.reduce((n, r) => n + r.promptTokenIds.length, 0));
  assert.equal(result.results.total_output_tokens, requests.reduce((n, r) => n + r.outputLen, 0));
  assert.ok(Math.abs(result.results.output_tokens_per_s * result.results.elapsed_s - result.results.total_output_tokens) < 1e-6);
  // The CPU backend measures its matmul rate and the host's memory bandwidth for the bound.
  const roofline = result.results.roofline;
  assert.ok(roofline && roofline.peak_flops_per_s !== null && roofline.bandwidth_bytes_per_s !== null, 'both device figures measured');
  assert.ok(roofline.fraction !== null && roofline.bound_s !== null && roofline.fraction > 0, `fraction ${roofline.fraction}`);
  assert.ok(Math.abs(roofline.fraction - roofline.bound_s / result.results.elapsed_s) < 1e-9, 'fraction = bound / elapsed');
  assert.match(run.stdout, /% of the device bound/);
});

test('bench throughput --num-iters: the median run of fresh prompts of the same lengths, with every run\'s rate and their spread', async () => {
  const output = join(dir, 'throughput-repeats.json');
  const run = await keelOk(['bench', 'throughput', ...MODEL, '--num-prompts', '4', '--input-len', '8', '--output-len', '3', '--random-range-ratio', '0.5', '--num-iters', '3', '--num-iters-warmup', '1', '--output', output]);
  assert.match(run.stdout, /median of 3 runs; output tokens\/s [\d.]+\.\.[\d.]+, spread [\d.]+ %/);
  const result = readResult(output);
  if (result.suite !== 'throughput' || !result.results?.repeats) throw new Error('expected a throughput result with repeats');
  const { repeats } = result.results;
  assert.equal(repeats.output_tokens_per_s.length, 3);
  const sorted = [...repeats.output_tokens_per_s].sort((a, b) => a - b);
  assert.deepEqual([repeats.min_output_tokens_per_s, repeats.median_output_tokens_per_s, repeats.max_output_tokens_per_s], sorted);
  assert.equal(result.results.output_tokens_per_s, repeats.median_output_tokens_per_s);
  assert.equal(repeats.relative_spread, (sorted[2] - sorted[0]) / sorted[1]);
  assert.deepEqual([result.config.num_iters, result.config.num_iters_warmup], [3, 1]);
  // Every run had the seed's lengths (only the token ids change between runs).
  const lengths = randomRequests({ numPrompts: 4, inputLen: { min: 4, max: 12 }, outputLen: { min: 1, max: 5 }, vocabSize: FIXTURE_VOCAB, seed: 0 });
  assert.equal(result.results.total_input_tokens, lengths.reduce((n, r) => n + r.promptTokenIds.length, 0));
});

test('bench throughput and serve --dataset custom: a JSONL file of text prompts, tokenized with the model\'s tokenizer', async () => {
  const file = join(dir, 'prompts.jsonl');
  const texts = ['def fibonacci(n):\n', 'import os\nimport sys\n', 'class Stack:\n    def __init__(self):\n'];
  writeFileSync(file, texts.map((prompt) => JSON.stringify({ prompt })).join('\n') + '\n');
  const tiny = ['--backend', 'cpu', '--no-progress'];
  const dataset = ['--dataset', 'custom', '--dataset-path', file, '--num-prompts', '2', '--output-len', '3'];
  const output = join(dir, 'throughput-custom.json');
  await keelOk(['bench', 'throughput', ...tiny, ...dataset, '--output', output]);
  const result = readResult(output);
  if (result.suite !== 'throughput' || !result.results) throw new Error('expected a throughput result');
  const llm = await LLM.load({ backend: 'cpu', showProgress: false });
  const tokens = texts.slice(0, 2).map((text) => llm.tokenizer!.encode(text, { addSpecialTokens: true }).length);
  await llm.close();
  assert.equal(result.results.num_requests, 2);
  assert.equal(result.results.total_input_tokens, tokens[0] + tokens[1]);
  assert.equal(result.results.total_output_tokens, 6);
  assert.deepEqual([result.config.dataset, result.config.dataset_path, result.config.num_prompts], ['custom', file, 2]);
  const serveOutput = join(dir, 'serve-custom.json');
  await keelOk(['bench', 'serve', '--launch', ...tiny, ...dataset, '--output', serveOutput]);
  const served = readResult(serveOutput);
  if (served.suite !== 'serve' || !served.results) throw new Error('expected a serve result');
  assert.equal(served.results.completed, 2);
  assert.equal(served.results.total_input_tokens, tokens[0] + tokens[1]);
  const wrong: [string[], RegExp][] = [
    [['bench', 'throughput', ...MODEL, ...dataset], /--dataset custom needs the model's tokenizer/],
    [['bench', 'throughput', ...tiny, '--dataset', 'custom'], /--dataset custom needs --dataset-path FILE/],
    [['bench', 'throughput', ...tiny, ...dataset, '--input-len', '8'], /--input-len describe random prompts/],
    [['bench', 'throughput', ...tiny, '--dataset', 'custom', '--dataset-path', file, '--num-prompts', '4'], /--num-prompts 4 is more than the 3 prompts/],
    [['bench', 'throughput', ...tiny, ...dataset, '--num-iters', '2'], /add --no-prefix-caching/],
  ];
  for (const [args, message] of wrong) assert.match((await keel(args)).stderr, message, args.join(' '));
});

test('bench throughput --lora-adapters: the requests run round robin with random adapters of --lora-rank, every token generated', async () => {
  const output = join(dir, 'throughput-lora.json');
  await keelOk(['bench', 'throughput', ...MODEL, '--num-prompts', '6', '--input-len', '8', '--output-len', '4', '--lora-adapters', '3', '--lora-rank', '4', '--output', output]);
  const result = readResult(output);
  if (result.suite !== 'throughput' || !result.results) throw new Error('expected a throughput result');
  assert.equal(result.results.total_output_tokens, 24);
  assert.equal(result.config.lora_adapters, 3);
  assert.equal(result.config.lora_rank, 4);
  assert.deepEqual([(result.config.engine as Record<string, unknown>).enableLora, (result.config.engine as Record<string, unknown>).maxLoras], [true, 3]);
});

test('bench serve --launch: every request completes; a model without a tokenizer is timed through logprobs chunks', async () => {
  const output = join(dir, 'serve.json');
  const run = await keelOk(['bench', 'serve', '--launch', ...MODEL, '--num-prompts', '6', '--input-len', '8', '--output-len', '4', '--max-concurrency', '2', '--output', output]);
  assert.match(run.stdout, /Serving Benchmark Result/);
  const result = readResult(output);
  if (result.suite !== 'serve' || !result.results) throw new Error('expected a serve result');
  assert.equal(result.results.completed, 6);
  assert.equal(result.results.failed, 0);
  assert.equal(result.results.total_input_tokens, 48);
  assert.equal(result.results.total_output_tokens, 24);
  assert.equal(result.results.token_timing, 'logprobs');
  assert.ok((result.results.mean_ttft_ms as number) > 0 && (result.results.mean_itl_ms as number) > 0 && (result.results.mean_tpot_ms as number) > 0);
  assert.equal(result.config.max_concurrency, 2);
  // The server's counters over the run: the warm-up request's prompt is not counted.
  assert.match(run.stdout, /Preemptions \(swapped\): +0 \(0\)/);
  assert.deepEqual(result.results.server_metrics, { prompt_tokens: 48, prefix_cache_hit_rate: { device: 0, host: 0 }, preemptions: 0, swaps: 0, speculation: null });
});

test('bench serve --launch with a draft model: the server\'s speculative decoding figures over the run, the warm-up left out', async () => {
  const output = join(dir, 'serve-speculative.json');
  const draft = ['--speculative-model', 'test/fixtures/llama-gqa', '--num-speculative-tokens', '2'];
  const run = await keelOk(['bench', 'serve', '--launch', ...MODEL, ...draft, '--num-prompts', '4', '--input-len', '8', '--output-len', '6', '--max-concurrency', '2', '--output', output]);
  assert.match(run.stdout, /Speculative decoding: +2\.50 tokens per verification \(100\.0% of 12 drafts accepted\)/);
  const result = readResult(output);
  if (result.suite !== 'serve' || !result.results) throw new Error('expected a serve result');
  assert.equal(result.results.total_output_tokens, 24);
  // The fixture drafting for itself: each request's 6 tokens are the prefill's, then verifications
  // of 2 drafts and of 1, all accepted (as in bench latency above), 4 requests over.
  assert.deepEqual(result.results.server_metrics?.speculation, {
    drafts: 8,
    draft_tokens: 12,
    accepted_tokens: 12,
    acceptance_rate: 1,
    mean_accepted_length: 2.5,
    acceptance_rate_by_position: [1, 1],
  });
});

test('bench serve --dataset multi-turn --launch: every turn completes, and with a host tier later turns find their history there', async () => {
  // Four conversations of three turns reach 20 blocks of 4 tokens each: the 24-block pool keeps about one.
  const args = ['--dataset', 'multi-turn', '--num-conversations', '4', '--num-turns', '3', '--input-len', '40', '--turn-len', '8', '--output-len', '4', '--block-size', '4', '--num-kv-blocks', '24'];
  const rates: { device: number; host: number }[] = [];
  for (const tier of [[], ['--kv-offload-gb', '0.01']]) {
    const output = join(dir, `serve-multi-turn-${tier.length}.json`);
    const run = await keelOk(['bench', 'serve', '--launch', ...MODEL, ...args, ...tier, '--output', output]);
    assert.match(run.stdout, /Multi-turn \(4 conversations x 3 turns\)/);
    const result = readResult(output);
    if (result.suite !== 'serve' || !result.results?.multi_turn) throw new Error('expected a multi-turn serve result');
    assert.equal(result.results.completed, 12);
    assert.equal(result.results.failed, 0);
    const multiTurn = result.results.multi_turn;
    assert.equal(multiTurn.mean_ttft_ms_by_turn.length, 3);
    assert.ok(multiTurn.mean_first_turn_ttft_ms! > 0 && multiTurn.mean_later_turns_ttft_ms! > 0);
    assert.equal(result.config.dataset, 'multi-turn');
    assert.equal(multiTurn.prefix_cache_hit_rate, undefined, 'the hit rates are in server_metrics');
    rates.push(result.results.server_metrics!.prefix_cache_hit_rate);
  }
  assert.equal(rates[0].host, 0, 'no host tier, no host hits');
  assert.ok(rates[1].host > 0, 'with the tier, evicted histories are loaded from the host');
  assert.ok(rates[1].device + rates[1].host > rates[0].device + rates[0].host);
});

test('bench serve --base-url: against a running server with a tokenizer, at a Poisson rate', async () => {
  const server = await startTinyServer();
  try {
    const output = join(dir, 'serve-url.json');
    await keelOk(['bench', 'serve', '--base-url', server.url, '--model', server.engine.info.modelPath, '--num-prompts', '5', '--input-len', '6', '--output-len', '3', '--request-rate', '50', '--output', output]);
    const result = readResult(output);
    if (result.suite !== 'serve' || !result.results) throw new Error('expected a serve result');
    assert.equal(result.engine, 'keel');
    assert.equal(result.device.backend, null);
    assert.equal(result.results.completed, 5);
    assert.equal(result.results.total_output_tokens, 15);
    assert.equal(result.config.request_rate, '50/s');
    assert.equal(result.results.server_metrics?.prompt_tokens, 30);
    assert.equal(result.results.server_metrics?.speculation, null);
  } finally {
    await server.close();
  }
});

test('bench plot: one SVG per suite from the results above; suites do not mix', async () => {
  for (const suite of ['latency', 'throughput', 'serve']) {
    const svg = join(dir, `${suite}.svg`);
    await keelOk(['bench', 'plot', join(dir, `${suite}.json`), '--output', svg]);
    const text = readFileSync(svg, 'utf8');
    assert.match(text, /^<svg/);
    assert.match(text, /keel llama-gqa \(cpu\)/);
  }
  const mixed = await keel(['bench', 'plot', join(dir, 'latency.json'), join(dir, 'throughput.json'), '--output', join(dir, 'x.svg')]);
  assert.equal(mixed.code, 1);
  assert.match(mixed.stderr, /mix latency, throughput/);
});

test('bench flags a user gets wrong are errors that say what to change', async () => {
  const cases: [string[], RegExp][] = [
    [['bench', 'serve', '--base-url', 'http://example.com:8000'], /loopback/],
    [['bench', 'serve', '--backend', 'cpu'], /--backend configure a launched engine: add --launch/],
    [['bench', 'serve', '--launch', '--base-url', 'http://127.0.0.1:1'], /not both/],
    [['bench', 'serve', '--turn-len', '4'], /--turn-len describe --dataset multi-turn/],
    [['bench', 'serve', '--dataset', 'multi-turn', '--num-prompts', '4'], /not --num-prompts/],
    [['bench', 'serve', '--base-url', 'http://127.0.0.1:1'], /no server answers at http:\/\/127\.0\.0\.1:1/],
    [['bench', 'latency', ...MODEL, '--output-len', '1'], /--output-len must be at least 2/],
    [['bench', 'latency', ...MODEL, '--batch-size', '1,x'], /--batch-size expects a number/],
    [['bench', 'throughput', '--workload', 'nano-vllm', '--num-prompts', '3'], /drop --num-prompts/],
    [['bench', 'nope'], /unknown benchmark "nope"/],
    [['bench', 'latency', ...MODEL, '--synthetic-accepted-drafts', '2'], /--synthetic-accepted-drafts needs a speculative method/],
    [['bench', 'linear', '--format', 'int4,int3'], /--format: "int3" is not one of bf16, fp8, int8, int4, nf4, llm-int8, mxfp4/],
    [['bench', 'linear', '--rows', '1,0'], /--rows: "0" is not a positive integer/],
    [['bench', 'linear', '--shape', '4096x4100'], /k must be a multiple of 32/],
    [['bench', 'linear', '--shape', '4096by4096'], /--shape: "4096by4096" is not NxK/],
    [['bench', 'linear', '--shape', '96x4096', '--format', 'mxfp4'], /n must be a multiple of 64/],
    [['bench', 'lora', '--rank', '8'], /unknown option --rank: see keel bench lora --help/],
    [['bench', 'lora', '--only', 'decode'], /keel bench lora takes no --only/],
    [['bench', 'attention', '--only', 'prefill,mla'], /--only: "mla" is not one of prefill, decode, mla-decode, mla-prefill/],
  ];
  for (const [args, message] of cases) {
    const run = await keel(args);
    assert.notEqual(run.code, 0, args.join(' '));
    assert.match(run.stderr, message, args.join(' '));
  }
});

test('without --output a result goes to ./bench-results/ of the current directory, not into Keel', async () => {
  const cwd = mkdtempSync(join(tmpdir(), 'keel-bench-cwd-'));
  try {
    const bin = fileURLToPath(new URL('../../bin/keel', import.meta.url));
    const model = fileURLToPath(new URL('../fixtures/llama-gqa', import.meta.url));
    const args = ['bench', 'latency', '--model', model, '--backend', 'cpu', '--no-progress', '--batch-size', '1', '--input-len', '4', '--output-len', '2', '--num-iters', '1', '--num-iters-warmup', '0'];
    await promisify(execFile)(bin, args, { cwd, encoding: 'utf8' });
    const [file, ...more] = readdirSync(join(cwd, 'bench-results'));
    assert.deepEqual(more, []);
    assert.match(file, /^latency-llama-gqa-cpu-.*\.json$/);
    assert.equal(readResult(join(cwd, 'bench-results', file)).suite, 'latency');
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
});

test('a benchmark off a terminal reports its progress in lines', (t) => {
  const lines: string[] = [];
  t.mock.method(process.stderr, 'write', (text: string) => lines.push(text));
  const progress = benchProgress('requests', 3, 'done', true, 0);
  for (let i = 0; i < 3; i++) progress.tick();
  progress.stop();
  t.mock.restoreAll();
  assert.deepEqual(lines.map((l) => l.replace(/\d+ s\n$/, 'S')), ['requests: 1/3 done, S', 'requests: 2/3 done, S', 'requests: 3/3 done, S']);
  const silent = benchProgress('requests', 3, 'done', false, 0);
  silent.tick();
  assert.equal(lines.length, 3);
});

test('bench latency --load-format dummy --quantization aqlm-2x8 runs keel-tiny, its roofline weighing AQLM code words, scales and codebooks', async () => {
  const weightBytes = async (quantization: string[]) => {
    const output = join(dir, `latency-dummy${quantization.join('-')}.json`);
    const shape = ['--batch-size', '1', '--input-len', '4', '--output-len', '2', '--num-iters', '1', '--num-iters-warmup', '0', '--num-kv-blocks', '16'];
    await keelOk(['bench', 'latency', '--load-format', 'dummy', ...quantization, '--backend', 'cpu', '--no-progress', ...shape, '--output', output]);
    const result = readResult(output);
    if (result.suite !== 'latency' || !result.results) throw new Error('expected a latency result');
    assert.equal((result.config.engine as { quantization: unknown }).quantization, quantization[1] ?? null);
    return result.results.batches[0].roofline!.weight_bytes_per_step;
  };
  const dense = await weightBytes([]);
  const aqlm = await weightBytes(['--quantization', 'aqlm-2x8']);
  // keel-tiny's stacked projections per layer, [rows, cols, parts]: q/k/v, o, gate/up, down (models/keel-tiny/config.json).
  const c = JSON.parse(readFileSync('models/keel-tiny/config.json', 'utf8')) as Record<string, number>;
  const q = c.num_attention_heads * c.head_dim;
  const kv = c.num_key_value_heads * c.head_dim;
  const projections = [[q + 2 * kv, c.hidden_size, 3], [c.hidden_size, q, 1], [2 * c.intermediate_size, c.hidden_size, 2], [c.hidden_size, c.intermediate_size, 1]];
  const float32 = 4;
  // Each projection's float32 values (the CPU backend's weight dtype) become a 2-byte code word per
  // 8 columns and a float32 scale per row, plus each part's 2 × 256 × 8 codebook values.
  const saved = projections.reduce((n, [rows, cols, parts]) => n + rows * cols * float32 - rows * ((cols / 8) * 2 + 4) - parts * 2 * 256 * 8 * float32, 0);
  assert.equal(dense - aqlm, c.num_hidden_layers * saved);
});
