// Where an engine step's HOST time goes, without a GPU: the real engine on the CPU backend, over a
// model whose compute is negligible (one layer, hidden 64), so what is left is the per-step work
// a GPU's speed cannot hide — the part that bounds a small model's offline throughput:
//
//   node --import tsx scripts/profile-host-step.ts [--max-num-seqs 256] [--num-prompts 256]
//        [--input-len 100..1024] [--output-len 100..1024] [--vocab 1024] [--temperature 0.6]
//
// Defaults: nano-vllm's workload (256 requests, 100..1024 tokens in and out, temperature 0.6).
// Every backend call (forward ops, sampling) is timed apart as "backend": on a GPU that is device
// work, and it is left out of the host total. The vocabulary is small by default because the CPU
// backend samples and runs the LM head on the host, which a GPU does on the device: a real size
// (--vocab 151936) changes only the backend line. What the CUDA backend does on the host inside its
// calls (packing the batch and the draws' parameters for upload) counts as backend here, so is not
// measured. Phases are exclusive (a phase's time excludes the phases it calls):
//   schedule        scheduler.schedule, onStepComplete, tokensRead (KV blocks, prefix hashes)
//   batch build     the model runner's batch description (token ids, positions, block tables, slots)
//   launch          the rest of the engine's step and the runner's execute: the per-row sampling
//                   parameters (draws) the engine hands the runner, the forward and sampling calls
//   output          reading the sampled tokens: stop checks, detokenizer, request updates
//   between steps   the event loop between steps (llm.generate's promises, setImmediate)
// Times are CPU milliseconds of this process (a clock read costs a few microseconds where the
// clock is a system call: about 12 per step). A decode step is one whose scheduled sequences each
// run one token; steps/s is over host time alone. For where time goes inside a phase, add node's
// --cpu-prof.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomRequests, type LengthRange } from '../src/bench/random-dataset.ts';
import { LLM } from '../src/engine/llm.ts';
import type { SchedulerOutput } from '../src/engine/scheduler.ts';

const { values } = parseArgs({
  options: {
    'max-num-seqs': { type: 'string' },
    'num-prompts': { type: 'string' },
    'input-len': { type: 'string' },
    'output-len': { type: 'string' },
    vocab: { type: 'string' },
    temperature: { type: 'string' },
  },
});
const range = (flag: string, text: string): LengthRange => {
  const [min, max = min] = text.split('..').map(Number);
  if (!(Number.isInteger(min) && Number.isInteger(max) && min >= 1 && min <= max)) throw new Error(`${flag} must be N or MIN..MAX (got ${text})`);
  return { min, max };
};
const maxNumSeqs = Number(values['max-num-seqs'] ?? 256);
const numPrompts = Number(values['num-prompts'] ?? 256);
const inputLen = range('--input-len', values['input-len'] ?? '100..1024');
const outputLen = range('--output-len', values['output-len'] ?? '100..1024');
const vocabSize = Number(values.vocab ?? 1024);
const temperature = Number(values.temperature ?? 0.6);

// Qwen3's shape at the smallest size: one layer, two query heads over one KV head.
const dir = mkdtempSync(join(tmpdir(), 'keel-host-step-'));
writeFileSync(
  join(dir, 'config.json'),
  JSON.stringify({
    architectures: ['Qwen3ForCausalLM'],
    model_type: 'qwen3',
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    head_dim: 32,
    hidden_act: 'silu',
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    max_position_embeddings: 4096,
    tie_word_embeddings: true,
    vocab_size: vocabSize,
    torch_dtype: 'float32',
  }),
);
const llm = await LLM.load({ model: dir, loadFormat: 'dummy', backend: 'cpu', maxNumSeqs, maxModelLen: inputLen.max + outputLen.max, showProgress: false });
rmSync(dir, { recursive: true });

type Timed = Record<string, (...args: never[]) => unknown>;
const totals = new Map<string, number>();
const stack: { name: string; start: number; children: number }[] = [];
// The process's CPU time, not the wall clock: the machine may be shared, and time spent waiting
// for a core is not the engine's. (The CPU backend runs on this thread alone.)
const cpuMs = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
};
const timed = <A extends unknown[], R>(name: string, fn: (...args: A) => R) =>
  function (this: unknown, ...args: A): R {
    // Backend calls made from inside a backend call (the forward's ops) are the outer call's.
    if (name === 'backend' && stack.at(-1)?.name === 'backend') return fn.apply(this, args);
    const frame = { name, start: cpuMs(), children: 0 };
    stack.push(frame);
    try {
      return fn.apply(this, args);
    } finally {
      stack.pop();
      const elapsed = cpuMs() - frame.start;
      totals.set(name, (totals.get(name) ?? 0) + elapsed - frame.children);
      if (stack.length > 0) stack[stack.length - 1].children += elapsed;
    }
  };
const wrap = (target: object, method: string, name: string) => {
  const object = target as Timed;
  object[method] = timed(name, object[method].bind(target) as (...args: unknown[]) => unknown);
};

// The engine's parts are private: reached at run time, as a profiler does.
const engine = (llm as unknown as { engine: Timed & { parts: Record<string, object> } }).engine;
const { scheduler, runner } = engine.parts;
const backend = (runner as { backend: object }).backend;
for (let proto = Object.getPrototypeOf(backend); proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
  for (const key of Object.getOwnPropertyNames(proto)) {
    if (key !== 'constructor' && typeof (backend as Timed)[key] === 'function' && !Object.hasOwn(backend, key)) wrap(backend, key, 'backend');
  }
}
// The model's forward too: its layers' JS only issues backend calls, and a CUDA decode step
// replays them recorded in a graph instead.
wrap((runner as { model: object }).model, 'forward', 'backend');
for (const method of ['schedule', 'onStepComplete', 'tokensRead']) wrap(scheduler, method, 'schedule');
wrap(runner, 'describe', 'batch build');
wrap(engine, 'finishStep', 'output');

// Each step's phases, and whether it was a decode step (every scheduled sequence runs one token).
const steps: { phases: Map<string, number>; batch: number; decode: boolean }[] = [];
let current: SchedulerOutput | null = null;
const schedule = (scheduler as Timed).schedule as () => SchedulerOutput;
(scheduler as Timed).schedule = () => (current = schedule());
const step = engine.step.bind(engine);
let lastEnd: number | null = null;
engine.step = () => {
  const start = cpuMs();
  totals.clear();
  if (lastEnd !== null) totals.set('between steps', start - lastEnd);
  current = null;
  const ran = timed('launch', step)();
  const scheduled = (current as SchedulerOutput | null)?.scheduled ?? [];
  steps.push({ phases: new Map(totals), batch: scheduled.length, decode: scheduled.length > 0 && scheduled.every((s) => s.numNewTokens === 1) });
  // Read last, so that this bookkeeping does not count as the engine's.
  lastEnd = cpuMs();
  return ran;
};

const requests = randomRequests({ numPrompts, inputLen, outputLen, vocabSize, seed: 0 });
const started = performance.now();
await Promise.all(requests.map((r) => llm.generate([r.promptTokenIds], { temperature, maxTokens: r.outputLen, ignoreEos: true })));
const elapsedS = (performance.now() - started) / 1000;
await llm.close();

const PHASES = ['schedule', 'batch build', 'launch', 'output', 'between steps'];
const report = (label: string, chosen: typeof steps) => {
  if (chosen.length === 0) return;
  const mean = (name: string) => chosen.reduce((t, s) => t + (s.phases.get(name) ?? 0), 0) / chosen.length;
  const host = PHASES.reduce((t, p) => t + mean(p), 0);
  const batch = chosen.reduce((t, s) => t + s.batch, 0) / chosen.length;
  console.log(`${label}: ${chosen.length} steps, mean batch ${batch.toFixed(1)}; host ${host.toFixed(3)} ms/step (${(1000 / host).toFixed(0)} steps/s), backend ${mean('backend').toFixed(3)} ms/step`);
  console.log(`  ${PHASES.map((p) => `${p} ${mean(p).toFixed(3)}`).join(' | ')}`);
};
const outputTokens = requests.reduce((n, r) => n + r.outputLen, 0);
console.log(`profile-host-step: ${numPrompts} requests, in ${inputLen.min}..${inputLen.max}, out ${outputLen.min}..${outputLen.max}, max-num-seqs ${maxNumSeqs}, vocab ${vocabSize}, temperature ${temperature}`);
console.log(`elapsed ${elapsedS.toFixed(2)} s for ${outputTokens} output tokens (backend included)`);
report('all steps', steps);
report('decode steps', steps.filter((s) => s.decode));
report(`decode steps at batch ${maxNumSeqs}`, steps.filter((s) => s.decode && s.batch === maxNumSeqs));
