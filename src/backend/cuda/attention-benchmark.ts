// Micro-benchmark of the attention kernels on the GPU, timed with CUDA events over CUDA-graph
// replays (so host launch cost stays out). Prints one JSON object:
//   decode: KV bytes read per second at 1k / 8k / 32k context for a few batch sizes
//   prefill: causal attention TFLOP/s for a few sequence shapes and head dims
//   ceilings: device-to-device copy bandwidth and a large cuBLAS bf16 GEMM, measured alike
// Usage: node --import tsx src/backend/cuda/bench-kernels.ts [out.json]
import { writeFileSync } from 'node:fs';
import type { AttentionShape } from '../backend.ts';
import { CudaBackend } from './cuda-backend.ts';
import type { CudaKvCache } from './cuda-tensor.ts';
import { BlockAssignment, bf16Tensor, buildBatch, randomBf16Values, ropeTables, seededRng, type SeqSpec } from './gpu-test-support.ts';

const rng = seededRng(1234);
const backend = new CudaBackend({ arenaBytes: 1 << 30 });
const device = backend.device;

/**
 * Median milliseconds of one `run`, each sample replaying a graph of `reps` runs. Callers begin a
 * step first: the arena must hold every output of the capture without growing during it.
 */
function timeGraph(run: () => void, reps: number, samples = 7): number {
  run(); // compiles and loads kernels before capture
  const graph = backend.captureGraph(() => {
    for (let i = 0; i < reps; i++) run();
  });
  graph.replay();
  const times: number[] = [];
  for (let s = 0; s < samples; s++) times.push(device.timeMs(() => graph.replay()) / reps);
  graph.dispose();
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

/** Fills device memory with random bf16 (never zeros: they can run faster than real data). */
function fillRandom(ptr: number, bytes: number): void {
  const chunk = bf16Tensor([1 << 22], randomBf16Values(rng, 1 << 22, 1)).data; // 8 MiB
  for (let at = 0; at < bytes; at += chunk.byteLength) {
    device.uploadSync(ptr + at, chunk.subarray(0, Math.min(chunk.byteLength, bytes - at)));
  }
}

function setup(shape: AttentionShape, blockSize: number, seqs: SeqSpec[]) {
  const longest = Math.max(...seqs.map((s) => s.cached + s.query));
  const numBlocks = seqs.reduce((n, s) => n + Math.ceil((s.cached + s.query) / blockSize), 0) + 1;
  const cache = backend.createKvCache({ numLayers: 1, numBlocks, blockSize, numKvHeads: shape.numKvHeads, headDim: shape.headDim }) as CudaKvCache;
  fillRandom(cache.base, 2 * cache.poolBytes);
  const batch = buildBatch(seqs, new BlockAssignment(rng, numBlocks, seqs.length), blockSize);
  const width = (shape.numHeads + 2 * shape.numKvHeads) * shape.headDim;
  const qkv = backend.loadWeight(bf16Tensor([batch.numTokens, width], randomBf16Values(rng, batch.numTokens * width, 1)));
  const rope = backend.uploadRopeTable(ropeTables(longest + 1, shape.headDim));
  return { cache, batch, qkv, rope };
}

function benchDecode(contextLen: number, numSeqs: number, shape: AttentionShape) {
  const seqs = Array.from({ length: numSeqs }, () => ({ cached: contextLen - 1, query: 1 }));
  const { cache, batch, qkv } = setup(shape, 16, seqs);
  const step = backend.beginStep(batch);
  const ms = timeGraph(() => backend.attention(qkv, cache, 0, step, shape), 20);
  const bytes = numSeqs * contextLen * shape.numKvHeads * shape.headDim * 2 * 2;
  return { contextLen, numSeqs, heads: `${shape.numHeads}/${shape.numKvHeads}x${shape.headDim}`, us: ms * 1e3, gbPerS: bytes / (ms * 1e-3) / 1e9 };
}

function benchPrefill(seqLen: number, numSeqs: number, shape: AttentionShape) {
  const seqs = Array.from({ length: numSeqs }, () => ({ cached: 0, query: seqLen }));
  const { cache, batch, qkv, rope } = setup(shape, 16, seqs);
  const step = backend.beginStep(batch);
  backend.ropeAndCacheWrite(qkv, rope, cache, 0, step, shape);
  const ms = timeGraph(() => backend.attention(qkv, cache, 0, step, shape), 5);
  // QKᵀ and PV, 2 flops per multiply-add, over the causal triangle.
  const flops = numSeqs * 4 * shape.numHeads * shape.headDim * ((seqLen * (seqLen + 1)) / 2);
  return { seqLen, numSeqs, heads: `${shape.numHeads}/${shape.numKvHeads}x${shape.headDim}`, ms, tflops: flops / (ms * 1e-3) / 1e12 };
}

function benchCeilings() {
  const bytes = 1 << 30;
  const src = device.alloc(bytes);
  const dst = device.alloc(bytes);
  fillRandom(src, bytes);
  const copyMs = timeGraph(() => device.copyAsync(dst, src, bytes), 5);
  device.free(src);
  device.free(dst);
  const n = 8192;
  backend.beginStep(buildBatch([{ cached: 0, query: 1 }], new BlockAssignment(rng, 1, 1), 16));
  const a = backend.loadWeight(bf16Tensor([n, n], randomBf16Values(rng, n * n, 1)));
  const b = backend.loadWeight(bf16Tensor([n, n], randomBf16Values(rng, n * n, 1)));
  const gemmMs = timeGraph(() => backend.linear(a, b, null), 5);
  return { readGbPerS: backend.measureMemoryBandwidth() / 1e9, copyGbPerS: (2 * bytes) / (copyMs * 1e-3) / 1e9, gemm8192Tflops: (2 * n ** 3) / (gemmMs * 1e-3) / 1e12 };
}

const llama8b: AttentionShape = { numHeads: 32, numKvHeads: 8, headDim: 128, scale: 128 ** -0.5, slidingWindow: null };
const small64: AttentionShape = { numHeads: 16, numKvHeads: 4, headDim: 64, scale: 0.125, slidingWindow: null };

const result = {
  device: device.info.name,
  arch: device.info.arch,
  ceilings: benchCeilings(),
  decode: [
    ...[1024, 8192, 32768].flatMap((ctx) => [benchDecode(ctx, 1, llama8b), benchDecode(ctx, 16, llama8b)]),
    benchDecode(1024, 64, llama8b),
  ],
  prefill: [
    benchPrefill(512, 8, llama8b),
    benchPrefill(2048, 1, llama8b),
    benchPrefill(4096, 1, llama8b),
    benchPrefill(2048, 1, small64),
  ],
};
backend.dispose();
const json = JSON.stringify(result, (_, v) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(4)) : v), 2);
if (process.argv[2]) writeFileSync(process.argv[2], json);
console.log(json);

