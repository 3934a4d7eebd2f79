// Where an engine step's HOST time goes, without a GPU: the real engine on the CPU backend, over a
// model whose compute is negligible (one layer, hidden 64), so what is left is the per-step work
// a GPU's speed cannot hide — the part that bounds a small model's offline throughput:
//
//   node --import tsx scripts/profile-host-step.ts [--max-num-seqs 256] [--num-prompts 256]
//        [--input-len 100..1024] [--output-len 100..1024] [--vocab 1024] [--temperature 0.6]
//
// Defaults: nano-vllm's workload (256 requests, 100..1024 tokens in and out, temperature 0.6).
// The phases are the engine's step timeline's (src/engine/step-timeline.ts, `--step-timeline` of
// keel bench): schedule, batch (the runner's batch description), draws (the per-row sampling
// parameters), wait, output, between (the event loop between steps). Its forward and sample
// phases are the CPU backend computing, device work on a GPU: they are reported apart as
// "backend" and left out of the host total. The vocabulary is small by default because the CPU
// backend samples and runs the LM head on the host, which a GPU does on the device: a real size
// (--vocab 151936) changes only the backend line. What the CUDA backend does on the host inside
// its calls (packing the batch and the draws for upload, launching) is backend here, so is not
// measured: on a GPU, `keel bench throughput --step-timeline` measures it. Times are wall-clock
// milliseconds (on a shared machine they include waiting for a core). A decode step is one whose
// scheduled sequences each run their newest token; steps/s is over host time alone. For where time
// goes inside a phase, add node's --cpu-prof.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomRequests, type LengthRange } from '../src/bench/random-dataset.ts';
import { LLM } from '../src/engine/llm.ts';
import { HOST_PHASES, type HostPhase, type StepRecord } from '../src/engine/step-timeline.ts';

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

// The engine's own step timeline (docs/benchmarks.md): each step's host phases and what it ran.
const steps: StepRecord[] = [];
llm.startStepTimeline((record) => steps.push(record));
const requests = randomRequests({ numPrompts, inputLen, outputLen, vocabSize, seed: 0 });
const started = performance.now();
await Promise.all(requests.map((r) => llm.generate([r.promptTokenIds], { temperature, maxTokens: r.outputLen, ignoreEos: true })));
const elapsedS = (performance.now() - started) / 1000;
llm.stopStepTimeline();
await llm.close();

// The forward and sampling phases are the CPU backend computing: on a GPU, device work.
const BACKEND: HostPhase[] = ['forward', 'sample'];
const PHASES = HOST_PHASES.filter((p) => !BACKEND.includes(p));
const report = (label: string, chosen: StepRecord[]) => {
  if (chosen.length === 0) return;
  const mean = (phases: readonly HostPhase[]) => chosen.reduce((t, s) => t + phases.reduce((u, p) => u + s.host[p], 0), 0) / chosen.length;
  const host = mean(PHASES);
  const batch = chosen.reduce((t, s) => t + s.composition.batchSize, 0) / chosen.length;
  console.log(`${label}: ${chosen.length} steps, mean batch ${batch.toFixed(1)}; host ${host.toFixed(3)} ms/step (${(1000 / host).toFixed(0)} steps/s), backend ${mean(BACKEND).toFixed(3)} ms/step`);
  console.log(`  ${PHASES.map((p) => `${p} ${mean([p]).toFixed(3)}`).join(' | ')}`);
};
const decode = (s: StepRecord) => s.composition.decodeRows > 0 && s.composition.decodeRows === s.composition.batchSize;
const outputTokens = requests.reduce((n, r) => n + r.outputLen, 0);
console.log(`profile-host-step: ${numPrompts} requests, in ${inputLen.min}..${inputLen.max}, out ${outputLen.min}..${outputLen.max}, max-num-seqs ${maxNumSeqs}, vocab ${vocabSize}, temperature ${temperature}`);
console.log(`elapsed ${elapsedS.toFixed(2)} s for ${outputTokens} output tokens (backend included)`);
report('all steps', steps);
report('decode steps', steps.filter(decode));
report(`decode steps at batch ${maxNumSeqs}`, steps.filter((s) => decode(s) && s.composition.batchSize === maxNumSeqs));
