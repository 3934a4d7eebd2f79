/**
 * Keel's side of tools/peers/gguf_check.sh (Keel beside llama.cpp on one GGUF file), with one
 * load of the model: its greedy continuation of token-id prompts, each step's top logprobs beside
 * it (JSON, for tools/peers/gguf_parity.py), then batch-1 decode timing as `keel bench latency`
 * measures it (a latency result).
 *
 *   node --import tsx scripts/keel-greedy.ts --model MODEL.gguf --prompts PROMPTS.json \
 *     --greedy-output GREEDY.json [--max-tokens 32] [--logprobs 8] [--backend cuda] [--max-model-len 4096] \
 *     [--latency-output LATENCY.json --input-len 128 --output-len 128 --num-iters 3 --num-iters-warmup 1]
 *
 * PROMPTS.json: {"prompts": [[id, ...], ...]}. GREEDY.json: {"model", "backend", "max_tokens",
 * "prompts": [{"tokens": [...], "top": [[[id, logprob], ...] per step]}]}. No latency run without
 * --latency-output.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadBenchEngine } from '../src/bench/keel-run.ts';
import { benchLatency } from '../src/cli/bench/latency-command.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    prompts: { type: 'string' },
    'greedy-output': { type: 'string' },
    'max-tokens': { type: 'string', default: '32' },
    logprobs: { type: 'string', default: '8' },
    backend: { type: 'string', default: 'cuda' },
    'max-model-len': { type: 'string', default: '4096' },
    'latency-output': { type: 'string' },
    'input-len': { type: 'string', default: '128' },
    'output-len': { type: 'string', default: '128' },
    'num-iters': { type: 'string', default: '3' },
    'num-iters-warmup': { type: 'string', default: '1' },
  },
});
for (const required of ['model', 'prompts', 'greedy-output'] as const) {
  if (values[required] === undefined) throw new Error(`keel-greedy.ts: --${required} is required`);
}
const int = (flag: keyof typeof values) => {
  const n = Number(values[flag]);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`keel-greedy.ts: --${flag} must be a positive integer (got ${values[flag]})`);
  return n;
};
const prompts = (JSON.parse(readFileSync(values.prompts!, 'utf8')) as { prompts: number[][] }).prompts;
const maxTokens = int('max-tokens');

const started = performance.now();
const bench = await loadBenchEngine({ model: values.model!, backend: values.backend as 'cuda' | 'cpu', showProgress: false, maxModelLen: int('max-model-len') }, { bandwidth: values['latency-output'] !== undefined });
const loadSeconds = (performance.now() - started) / 1000;
try {
  console.log(`keel-greedy.ts: loaded ${values.model} on ${bench.facts.backend} in ${loadSeconds.toFixed(1)} s`);
  const outputs = await bench.llm.generate(prompts, { temperature: 0, maxTokens, ignoreEos: true, logprobs: int('logprobs') });
  const greedy = {
    model: values.model,
    backend: bench.facts.backend,
    device: bench.facts.deviceName,
    load_seconds: loadSeconds,
    max_tokens: maxTokens,
    prompts: outputs.map((o) => {
      const c = o.outputs[0];
      return { tokens: c.tokenIds, top: (c.logprobs ?? []).map((step) => step.top.map((t) => [t.tokenId, t.logprob])) };
    }),
  };
  writeFileSync(values['greedy-output']!, `${JSON.stringify(greedy)}\n`);
  console.log(`keel-greedy.ts: wrote ${values['greedy-output']}`);
  if (values['latency-output'] !== undefined) {
    const flags = {
      batchSizes: [1],
      inputLen: int('input-len'),
      outputLen: int('output-len'),
      numIters: int('num-iters'),
      numItersWarmup: int('num-iters-warmup'),
      structuredOutput: null,
    };
    await benchLatency(bench, flags, { baseline: null, output: values['latency-output'] });
  }
} finally {
  await bench.llm.close();
}
