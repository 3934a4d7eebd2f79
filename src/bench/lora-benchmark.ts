// The LoRA kernels timed on the GPU (what `keel bench lora` reports), with CUDA events over
// CUDA-graph replays: Backend.addLora on one layer of Llama-3.1-8B's four adapted linears (q/k/v,
// o, gate/up, down), beside the same linears' own matmuls, for a decode step of 128 sequences and a
// prefill step of 4 chunks of 512 tokens, the adapters round robin over the sequences (as
// `keel bench throughput --lora-adapters N` runs them), with --max-loras N slots.
import type { LoraShape, Tensor } from '../backend/backend.ts';
import { CudaBackend } from '../backend/cuda/cuda-backend.ts';
import { CudaLoraWeights, CudaTensor } from '../backend/cuda/cuda-tensor.ts';
import { describeBatch, type BatchDescription } from '../step/batch.ts';
import { fillRandomBf16, medianGraphMs } from './graph-timing.ts';
import { seededRng } from './synthetic-batch.ts';

const LINEARS: readonly Omit<LoraShape, 'slots' | 'maxRank'>[] = [
  { inFeatures: 4096, sliceRows: [4096, 1024, 1024] },
  { inFeatures: 4096, sliceRows: [4096] },
  { inFeatures: 4096, sliceRows: [14336, 14336] },
  { inFeatures: 14336, sliceRows: [4096] },
];
export const LORA_RANKS = [16, 64];
export const LORA_STEPS = [
  { step: 'decode' as const, sequences: 128, tokensPerSequence: 1, adapters: [1, 8, 32], reps: 20 },
  { step: 'prefill' as const, sequences: 4, tokensPerSequence: 512, adapters: [1, 4], reps: 3 },
];
const BLOCK_SIZE = 16;

export interface LoraFigure {
  step: 'decode' | 'prefill';
  tokens: number;
  adapters: number;
  rank: number;
  /** addLora on the four linears, one layer. */
  lora_us: number;
  /** The four linears' matmuls, one layer. */
  base_us: number;
  /** lora_us / base_us. */
  overhead: number;
  /** The step's adapters' A and B bytes (each read once) per second of lora_us. */
  adapter_gb_per_s: number;
}

export interface LoraBenchmark {
  deviceName: string;
  driverCudaVersion: number;
  figures: LoraFigure[];
}

/** Runs every figure on GPU `ordinal`, with its own backend released at the end. */
export function runLoraBenchmark(ordinal = 0): LoraBenchmark {
  const backend = new CudaBackend({ device: ordinal, arenaBytes: 2 << 30 });
  const rng = seededRng(1234);
  const owned: number[] = [];
  const random = (shape: number[]): Tensor => {
    const t = new CudaTensor(shape, backend.device.alloc(shape[0] * shape[1] * 2), 'bf16');
    owned.push(t.ptr);
    fillRandomBf16(backend, rng, t.ptr, shape[0] * shape[1] * 2);
    return t;
  };
  try {
    const weights = LINEARS.map((l) => random([l.sliceRows.reduce((a, b) => a + b, 0), l.inFeatures]));
    const figures: LoraFigure[] = [];
    for (const { step, sequences, tokensPerSequence, adapters: counts, reps } of LORA_STEPS) {
      const tokens = sequences * tokensPerSequence;
      const x = LINEARS.map((l) => random([tokens, l.inFeatures]));
      const out = weights.map((w) => random([tokens, w.shape[0]]));
      const baseMs = medianGraphMs(backend, () => {
        backend.beginStep(batchOf(sequences, tokensPerSequence, 0));
        return () => weights.forEach((w, i) => backend.linear(x[i], w, null));
      }, reps);
      for (const rank of LORA_RANKS) {
        for (const adapters of counts) {
          const lora = LINEARS.map((l) => {
            const w = backend.createLoraWeights({ ...l, slots: adapters, maxRank: rank }) as CudaLoraWeights;
            fillRandomBf16(backend, rng, w.a, adapters * (w.slotBytesA + w.slotBytesB));
            w.hostRanks.fill(rank);
            backend.device.uploadSync(w.ranks, w.hostRanks);
            return w;
          });
          const batch = batchOf(sequences, tokensPerSequence, adapters);
          const ms = medianGraphMs(backend, () => {
            const s = backend.beginStep(batch);
            return () => lora.forEach((w, i) => backend.addLora(out[i], x[i], w, s));
          }, reps);
          const bytes = adapters * lora.reduce((n, w) => n + w.slotBytesA + w.slotBytesB, 0);
          figures.push({ step, tokens, adapters, rank, lora_us: ms * 1e3, base_us: baseMs * 1e3, overhead: ms / baseMs, adapter_gb_per_s: bytes / (ms * 1e-3) / 1e9 });
        }
      }
    }
    return { deviceName: backend.device.info.name, driverCudaVersion: backend.device.info.driverCudaVersion, figures };
  } finally {
    for (const ptr of owned) backend.device.free(ptr);
    backend.dispose();
  }
}

/** `sequences` chunks of `tokensPerSequence` tokens, sequence i on adapter slot i mod `adapters` (none when 0). */
function batchOf(sequences: number, tokensPerSequence: number, adapters: number): BatchDescription {
  const blocks = Math.ceil(tokensPerSequence / BLOCK_SIZE);
  return describeBatch(
    Array.from({ length: sequences }, (_, i) => ({
      tokens: new Array<number>(tokensPerSequence).fill(1),
      startPos: 0,
      blockTables: [Array.from({ length: blocks }, (_, b) => i * blocks + b)],
      ...(adapters > 0 ? { loraSlot: i % adapters } : {}),
    })),
    BLOCK_SIZE,
  );
}
