/**
 * Times the CPU backend on a random model shaped like Keel's default (hidden 384, 4 layers, vocab
 * 8192): one decode step end to end, a prefill, and each decode-time op on its own.
 * Run: node --import tsx src/backend/cpu/bench-cpu-ops.ts
 */
import { CpuBackend } from './cpu-backend.ts';
import { LlamaModel } from '../../model/llama.ts';
import type { Tensor } from '../backend.ts';
import { describeBatch } from '../../engine/batch.ts';
import { TestRandom } from '../../../test/helpers/cpu-random.ts';
import { f32HostTensor, llamaConfig, plainRopeTable, randomLlamaWeights, uploadLlamaWeights } from '../../../test/helpers/cpu-random-llama.ts';

const config = llamaConfig({
  vocabSize: 8192,
  hiddenSize: 384,
  intermediateSize: 1024,
  numLayers: 4,
  numHeads: 6,
  numKvHeads: 2,
  headDim: 64,
  maxPositionEmbeddings: 2048,
  tieWordEmbeddings: true,
});
const PROMPT_LEN = 128;
const DECODE_STEPS = 64;
const BLOCK_SIZE = 16;

const random = new TestRandom(1);
const backend = new CpuBackend();
const rope = backend.uploadRopeTable(plainRopeTable(config.headDim, config.ropeTheta, config.maxPositionEmbeddings));
const model = new LlamaModel(config, uploadLlamaWeights(backend, config, randomLlamaWeights(config, random)), backend, rope);
const numBlocks = Math.ceil((PROMPT_LEN + DECODE_STEPS) / BLOCK_SIZE);
const cache = backend.createKvCache({ numLayers: config.numLayers, numBlocks, blockSize: BLOCK_SIZE, numKvHeads: config.numKvHeads, headDim: config.headDim });
const blockTable = Array.from({ length: numBlocks }, (_, i) => i);
const token = () => random.int(0, config.vocabSize - 1);

function runStep(tokens: number[], startPos: number): number {
  const began = performance.now();
  const step = backend.beginStep(describeBatch([{ tokens, startPos, blockTable }], BLOCK_SIZE));
  backend.toHost(model.forward(step, cache));
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
const x = (cols: number): Tensor => backend.loadWeight(f32HostTensor(random.floats(cols), [1, cols]));
const weight = (rows: number, cols: number): Tensor => backend.loadWeight(f32HostTensor(random.floats(rows * cols), [rows, cols]));
const { hiddenSize: hidden, intermediateSize: inter, headDim } = config;
const linears: [string, number, number][] = [
  ['qkv', (config.numHeads + 2 * config.numKvHeads) * headDim, hidden],
  ['o', hidden, config.numHeads * headDim],
  ['gateUp', 2 * inter, hidden],
  ['down', hidden, inter],
  ['lmHead', config.vocabSize, hidden],
];
for (const [name, outDim, inDim] of linears) {
  const input = x(inDim);
  const w = weight(outDim, inDim);
  let best = Infinity;
  for (let i = 0; i < 20; i++) {
    const began = performance.now();
    backend.linear(input, w, null);
    best = Math.min(best, performance.now() - began);
  }
  console.log(`linear ${name} [1, ${inDim}] x [${outDim}, ${inDim}]ᵀ: ${best.toFixed(3)} ms (${((outDim * inDim) / best / 1e6).toFixed(2)} GMAC/s)`);
}
