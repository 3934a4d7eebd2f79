// Where a decode step's GPU time goes, op by op, on the GPU host (CUDA backend, random weights):
//
//   source .gpu/env.sh && node scripts/profile-decode-step.ts [--model bench/configs/llama-3.1-8b] [--context 200]
//     [--quantization int4] [--query-tokens 5] [--eagle3-head bench/configs/eagle3-llama-3.1-8b]
//     [--sparse-token-budget 4096] [--batch 136 --prefill-chunk 2048] [--table-keys 32768]
//
// --quantization quantizes the weights at load as keel does; --query-tokens N > 1 profiles a
// verification step instead (the last sampled token and N - 1 drafts, logits at every one), as
// speculative decoding runs it. --eagle3-head DIR profiles that EAGLE-3 head's pass instead of the
// target's forward (random weights): one drafting pass of a chain, or with --query-tokens N the
// catch-up over N tokens (logits at the last), as speculative decoding runs them.
// --sparse-token-budget N loads the model with Quest sparse attention at that budget (the sinks,
// window and dense layers at their defaults): each sparse layer's attention op then holds the
// block selection's two kernels and the sparse decode attention. --batch B runs B sequences of
// --context tokens each; --prefill-chunk T adds a new sequence's first T tokens to the profiled step,
// as a mixed step of offline throughput holds (prefill chunks beside decodes). --table-keys K widens
// the step's block tables to hold at least K keys (a power of two of blocks, as a graph's batch rounds
// them), as a short decode's are beside a long sequence's: the decode kernels' launch is sized for
// the widest table, and each decode splits only its own keys over it (decode-split.cuh).
// Prefills --context tokens of one sequence, runs one batch-1 decode step eagerly while recording
// each backend op it calls, then times every distinct op (by name and weight shape) replayed 20
// times in a CUDA graph, so launch gaps count as they do in a recorded step. Prints per-op time
// and count, their sum, and the whole forward replayed as one graph. An op replayed 20 times reads
// the same weights each time: one that fits the 50 MB L2 (an MoE layer's down rows, ~25 MB) reads
// partly from it, so per-op figures flatter the MoE kernels; the whole forward is the honest one.
// KEEL_MOE_DECODE=split profiles the MoE block's split path (router, routing, expert GEMVs).
import { parseArgs } from 'node:util';
import type { CudaBackend } from '../src/backend/cuda/cuda-backend.ts';
import type { EngineOptions } from '../src/config.ts';
import { describeBatch } from '../src/step/batch.ts';
import { loadModel } from '../src/engine/load-engine.ts';
import { HeadProposer } from '../src/engine/head-proposer.ts';
import { loadEagleHead } from '../src/engine/load-draft-head.ts';

const { values } = parseArgs({
  options: { model: { type: 'string' }, context: { type: 'string' }, quantization: { type: 'string' }, 'query-tokens': { type: 'string' }, 'eagle3-head': { type: 'string' }, 'sparse-token-budget': { type: 'string' }, batch: { type: 'string' }, 'prefill-chunk': { type: 'string' }, 'table-keys': { type: 'string' } },
});
const context = Number(values.context ?? 200);
const queryTokens = Number(values['query-tokens'] ?? 1);
if (!(Number.isInteger(queryTokens) && queryTokens >= 1)) throw new Error(`--query-tokens must be a positive integer, not ${values['query-tokens']}`);
const quantization = values.quantization as EngineOptions['quantization'];
const batch = Number(values.batch ?? 1);
const prefillChunk = Number(values['prefill-chunk'] ?? 0);
if (!(Number.isInteger(batch) && batch >= 1)) throw new Error(`--batch must be a positive integer, not ${values.batch}`);
if (!(Number.isInteger(prefillChunk) && prefillChunk >= 0)) throw new Error(`--prefill-chunk must be a non-negative integer, not ${values['prefill-chunk']}`);
const tableKeys = Number(values['table-keys'] ?? 0);
if (!(Number.isInteger(tableKeys) && tableKeys >= 0)) throw new Error(`--table-keys must be a non-negative integer, not ${values['table-keys']}`);
const sparseBudget = values['sparse-token-budget'] === undefined ? null : Number(values['sparse-token-budget']);
const sparse: Partial<EngineOptions> = sparseBudget === null ? {} : { sparseAttention: 'quest', sparseTokenBudget: sparseBudget };
const loaded = await loadModel({ model: values.model ?? 'bench/configs/llama-3.1-8b', loadFormat: 'dummy', backend: 'cuda', showProgress: false, quantization, ...sparse });
if (loaded.backend.name !== 'cuda') throw new Error('profile-decode-step needs the CUDA backend');
const backend = loaded.backend as CudaBackend;
const { model, modelConfig } = loaded;
const device = backend.device;

const headDir = values['eagle3-head'];
if (headDir !== undefined && (batch > 1 || prefillChunk > 0)) throw new Error('--eagle3-head profiles one sequence: no --batch or --prefill-chunk');
const blockSize = 16;
const width = 2 ** Math.ceil(Math.log2(Math.ceil(Math.max(context + queryTokens, tableKeys) / blockSize)));
const prefillBlocks = Math.ceil(prefillChunk / blockSize);
const cache = backend.createKvCache({ numBlocks: batch * width + prefillBlocks, blockSize, layers: model.kvLayers });
const tables = Array.from({ length: batch }, (_, s) => Array.from({ length: width }, (_, i) => s * width + i));
const prompt = Array.from({ length: context }, (_, i) => (i * 37) % modelConfig.vocabSize);
// Prefilled in steps of up to 8,192 tokens, as the engine's chunked prefill would (a 128k context in one chunk needs ~10 GB of activations).
const PREFILL_STEP_TOKENS = 8192;
const seqsPerStep = Math.max(1, Math.floor(PREFILL_STEP_TOKENS / Math.max(1, context)));
for (let first = 0; first < batch; first += seqsPerStep) {
  const seqs = tables.slice(first, first + seqsPerStep);
  for (let start = 0; start < context; start += PREFILL_STEP_TOKENS) {
    const chunks = seqs.map((table) => ({ tokens: prompt.slice(start, start + PREFILL_STEP_TOKENS), startPos: start, blockTables: [table] }));
    backend.toHost(model.forward(backend, backend.beginStep(describeBatch(chunks, blockSize)), cache));
  }
}
// A decode step (a token a sequence), or verification chunks of queryTokens tokens with logits at
// every one; with --prefill-chunk, a new sequence's first chunk beside them (logits at its last
// token); a head's pass has logits at its last token.
const verification = queryTokens > 1 && headDir === undefined;
const chunks = tables.map((table) => ({ tokens: Array.from({ length: queryTokens }, (_, i) => 7 + i), startPos: context, blockTables: [table], verification }));
const prefill = Array.from({ length: prefillBlocks }, (_, i) => batch * width + i);
if (prefillChunk > 0) chunks.push({ tokens: prompt.slice(0, prefillChunk), startPos: 0, blockTables: [prefill], verification: false });
const logitsRows = verification ? [...Array.from({ length: batch * queryTokens }, (_, i) => i), ...(prefillChunk > 0 ? [batch * queryTokens + prefillChunk - 1] : [])] : undefined;
const decodeStep = () => backend.beginStep(describeBatch(chunks, blockSize, logitsRows, width));
// What is profiled: the target's forward, or the head's pass reading its feature rows from its own cache.
let forwardOnce = (step: ReturnType<typeof decodeStep>) => model.forward(backend, step, cache);
if (headDir !== undefined) {
  const head = loadEagleHead(headDir, 3, loaded);
  const headCache = backend.createKvCache({ numBlocks: width, blockSize, layers: HeadProposer.cacheLayers(head) });
  forwardOnce = (step) => head.forward(backend, step, headCache, backend.readStepCacheRows(headCache, 1, step)).logits;
}

const OPS = [
  'embedding',
  'rmsNorm',
  'addRmsNorm',
  'linear',
  'qkNorm',
  'ropeAndCacheWrite',
  'attention',
  'mlaRopeAndCacheWrite',
  'mlaAttention',
  'headwiseLinear',
  'gatedLinear',
  'routeExperts',
  'expertMlp',
  'moe',
  'addInto',
  'gatherLogitsRows',
  'concatColumns',
  'readStepCacheRows',
] as const;
type Op = (...args: unknown[]) => unknown;
const ops = backend as unknown as Record<(typeof OPS)[number], Op>;
const recorded: { key: string; run: () => void }[] = [];
const originals = OPS.map((name) => [name, ops[name]] as const);
// An op that runs others (moe on its split path) is recorded whole, not its parts again.
let depth = 0;
for (const [name, original] of originals) {
  ops[name] = (...args: unknown[]) => {
    // Weight ops are told apart by the weight's shape (the experts' stacked gate/up); the others are one op each.
    const experts = name === 'expertMlp' ? args[2] : name === 'moe' ? (args[1] as { experts: unknown }).experts : null;
    const weight = name === 'linear' || name === 'gatedLinear' || name === 'headwiseLinear' ? args[1] : experts === null ? null : (experts as { gateUp: unknown }).gateUp;
    // A Quest model's attention is dense in some layers and selects blocks in the others.
    const sparse = name === 'attention' && ((args[4] as { sparse?: unknown }).sparse ?? null) !== null ? ' (sparse)' : '';
    const key = weight === null ? `${name}${sparse}` : `${name} ${(weight as { shape: number[] }).shape.join('x')}`;
    if (depth === 0) recorded.push({ key, run: () => void original.apply(backend, args) });
    depth++;
    try {
      return original.apply(backend, args);
    } finally {
      depth--;
    }
  };
}
backend.toHost(forwardOnce(decodeStep()));
for (const [name, original] of originals) ops[name] = original;

/** Milliseconds per run of `run`, replayed `reps` times in one graph (median of 5 replays). */
function graphMs(run: () => void, reps: number): number {
  const graph = device.captureGraph(() => {
    for (let i = 0; i < reps; i++) run();
  });
  graph.replay();
  device.synchronize();
  const times = Array.from({ length: 5 }, () => device.timeMs(() => graph.replay())).sort((a, b) => a - b);
  graph.dispose();
  return times[2] / reps;
}

const perOp = new Map<string, { us: number; count: number }>();
for (const { key, run } of recorded) {
  const entry = perOp.get(key) ?? { us: graphMs(run, 20) * 1000, count: 0 };
  entry.count++;
  perOp.set(key, entry);
}
let sumMs = 0;
for (const [key, { us, count }] of [...perOp].sort((a, b) => b[1].us * b[1].count - a[1].us * a[1].count)) {
  sumMs += (us * count) / 1000;
  console.log(`${key.padEnd(36)} ${String(count).padStart(4)} × ${us.toFixed(2).padStart(8)} µs = ${((us * count) / 1000).toFixed(3)} ms`);
}
const forwardStep = decodeStep();
const chunkKind = headDir === undefined ? 'a verification chunk' : `the head's catch-up`;
const what = `${batch > 1 ? `batch ${batch}, ` : ''}${prefillChunk > 0 ? `a prefill chunk of ${prefillChunk} beside, ` : ''}context ${context}${tableKeys > 0 ? ` in tables of ${width * blockSize} keys` : ''}${headDir === undefined ? '' : `, the EAGLE-3 head at ${headDir}`}${queryTokens > 1 ? `, ${chunkKind} of ${queryTokens} tokens` : ''}${quantization ? `, ${quantization}` : ''}${sparseBudget === null ? '' : `, Quest budget ${sparseBudget}`}`;
console.log(`sum of ${recorded.length} ops: ${sumMs.toFixed(3)} ms; whole forward in one graph: ${graphMs(() => void forwardOnce(forwardStep), 5).toFixed(3)} ms (${what})`);
backend.dispose();
