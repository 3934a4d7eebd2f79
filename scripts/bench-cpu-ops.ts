/**
 * Times the CPU backend on Keel's default model's architecture with random weights (hidden 384,
 * 4 layers, vocab 8192): one decode step end to end, a prefill, and each decode-time linear alone.
 * Run: node --import tsx scripts/bench-cpu-ops.ts
 */
import type { Tensor } from '../src/backend/backend.ts';
import { DEFAULT_MODEL_DIR, loadModel } from '../src/engine/load-engine.ts';
import type { LlamaConfig } from '../src/models/llama.ts';
import { describeBatch } from '../src/step/batch.ts';
import { float32Tensor } from '../src/tensor/host-ops.ts';

const PROMPT_LEN = 128;
const DECODE_STEPS = 64;
const BLOCK_SIZE = 16;

const { backend, model, modelConfig } = await loadModel({ model: DEFAULT_MODEL_DIR, loadFormat: 'dummy', backend: 'cpu', showProgress: false });
const config = modelConfig as LlamaConfig;
const numBlocks = Math.ceil((PROMPT_LEN + DECODE_STEPS) / BLOCK_SIZE);
const cache = backend.createKvCache({ numBlocks, blockSize: BLOCK_SIZE, layers: model.kvLayers });
const blockTable = Array.from({ length: numBlocks }, (_, i) => i);
let seed = 1;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
const token = () => Math.floor(((random() + 1) / 2) * config.vocabSize);

function runStep(tokens: number[], startPos: number): number {
  const began = performance.now();
  const step = backend.beginStep(describeBatch([{ tokens, startPos, blockTables: [blockTable] }], BLOCK_SIZE));
  backend.toHost(model.forward(backend, step, cache));
  return performance.now() - began;
}

const prefillMs = runStep(Array.from({ length: PROMPT_LEN }, token), 0);
const decodeMs = Array.from({ length: DECODE_STEPS }, (_, i) => runStep([token()], PROMPT_LEN + i));
const sorted = [...decodeMs].sort((a, b) => a - b);
const mean = decodeMs.reduce((a, b) => a + b, 0) / decodeMs.length;
console.log(`model: hidden ${config.hiddenSize}, ${config.numLayers} layers, vocab ${config.vocabSize}, ${config.numHeads}q/${config.numKvHeads}kv heads of ${config.headDim}, intermediate ${config.intermediateSize}`);
console.log(`prefill ${PROMPT_LEN} tokens: ${prefillMs.toFixed(1)} ms (${((PROMPT_LEN / prefillMs) * 1000).toFixed(0)} tok/s)`);
console.log(`decode, context ${PROMPT_LEN}..${PROMPT_LEN + DECODE_STEPS}: median ${sorted[sorted.length >> 1].toFixed(2)} ms/token, mean ${mean.toFixed(2)}, min ${sorted[0].toFixed(2)}`);

// Decode-time linears one at a time (rows = 1), best of several runs.
const randomTensor = (shape: number[]): Tensor => backend.loadWeight(float32Tensor(Float32Array.from({ length: shape[0] * shape[1] }, random), shape));
const { hiddenSize: hidden, intermediateSize: inter, headDim } = config;
const linears: [string, number, number][] = [
  ['qkv', (config.numHeads + 2 * config.numKvHeads) * headDim, hidden],
  ['o', hidden, config.numHeads * headDim],
  ['gateUp', 2 * inter, hidden],
  ['down', hidden, inter],
  ['lmHead', config.vocabSize, hidden],
];
for (const [name, outDim, inDim] of linears) {
  const input = randomTensor([1, inDim]);
  const w = randomTensor([outDim, inDim]);
  let best = Infinity;
  for (let i = 0; i < 20; i++) {
    const began = performance.now();
    backend.linear(input, w, null);
    best = Math.min(best, performance.now() - began);
  }
  console.log(`linear ${name} [1, ${inDim}] x [${outDim}, ${inDim}]ᵀ: ${best.toFixed(3)} ms (${((outDim * inDim) / best / 1e6).toFixed(2)} GMAC/s)`);
}
