import type { CudaDevice } from './cuda-device.ts';
import type { DevicePtr } from './driver-api.ts';

/** Batch rows past the GEMV that tuning covers: decode steps and short mixed ones (prefills take cuBLAS's pick). */
export const TUNED_GEMM_MAX_ROWS = 256;
/** Runs of each contender before timing (the first may load its kernel) and runs timed. */
const WARMUP_RUNS = 2;
const TIMED_RUNS = 5;
/** A candidate replaces cuBLAS only when this much faster: run-to-run noise must not flip the choice. */
const MIN_GAIN = 0.03;

/** How bf16 linears past the GEMV choose their GEMM: cuBLAS's pick, or the fastest by timing (GemmTuner). */
export type Bf16Gemm = 'cublas' | 'tuned';
export const BF16_GEMMS: readonly Bf16Gemm[] = ['cublas', 'tuned'];

/** What tunePending returns on the replays (nearly all) with nothing to time. */
const NONE: ReadonlySet<string> = new Set();

/** cuBLAS's own pick (cublasGemmEx), or cuBLASLt heuristic candidate i. */
export type GemmChoice = 'cublas' | number;

/**
 * The bf16 GEMM each decode-sized shape runs, chosen by timing: cuBLAS's pick against each of
 * cuBLASLt's heuristic candidates (cublas-lt.ts), on the shape's own weight and scratch
 * activations, once per (rows, n, k). Memory-bound skinny GEMMs are where cuBLAS's choice leaves
 * bandwidth behind (a split of k the heuristic does not rank first, say).
 *
 * Timing needs a synchronizing stream, which a CUDA graph's recording forbids: a shape first met
 * while recording runs cuBLAS's pick and waits in `pending`, with the graphs that recorded it,
 * until `tunePending`, called between steps, times it and names the graphs to record again.
 */
export class GemmTuner {
  private readonly device: CudaDevice;
  private readonly choices = new Map<string, GemmChoice>();
  private readonly pending = new Map<string, { rows: number; n: number; k: number; w: DevicePtr; graphs: Set<string> }>();

  constructor(device: CudaDevice) {
    this.device = device;
  }

  /**
   * The GEMM for y [rows, n] = x [rows, k] · wᵀ: timed now, unless the graph `recording` is being
   * recorded (null: none), when an untimed shape takes cuBLAS and is noted with that graph.
   */
  choice(rows: number, n: number, k: number, w: DevicePtr, recording: string | null): GemmChoice {
    const key = `${rows},${n},${k}`;
    const known = this.choices.get(key);
    if (known !== undefined) return known;
    if (recording !== null) {
      const entry = this.pending.get(key) ?? { rows, n, k, w, graphs: new Set<string>() };
      entry.graphs.add(recording);
      this.pending.set(key, entry);
      return 'cublas';
    }
    return this.tune(key, rows, n, k, w);
  }

  /** Times the shapes met while recording; returns the graphs that recorded a shape which now runs other than cuBLAS's pick. */
  tunePending(): ReadonlySet<string> {
    if (this.pending.size === 0) return NONE;
    const stale = new Set<string>();
    for (const [key, { rows, n, k, w, graphs }] of this.pending) {
      if (this.tune(key, rows, n, k, w) !== 'cublas') for (const graph of graphs) stale.add(graph);
    }
    this.pending.clear();
    return stale;
  }

  /** Runs the chosen GEMM. */
  run(choice: GemmChoice, y: DevicePtr, x: DevicePtr, w: DevicePtr, rows: number, n: number, k: number): void {
    if (choice === 'cublas') this.device.cublas.linearBf16(y, x, w, rows, n, k);
    else this.device.cublasLt.bf16(y, x, w, rows, n, k, choice);
  }

  private tune(key: string, rows: number, n: number, k: number, w: DevicePtr): GemmChoice {
    const x = this.device.alloc(2 * rows * k);
    const y = this.device.alloc(2 * rows * n);
    try {
      // bf16 0x3c3c (0.0115) everywhere: zeros can run faster than real data.
      this.device.fillBytes(x, 0x3c, 2 * rows * k);
      const time = (choice: GemmChoice) => {
        for (let i = 0; i < WARMUP_RUNS; i++) this.run(choice, y, x, w, rows, n, k);
        return this.device.timeMs(() => {
          for (let i = 0; i < TIMED_RUNS; i++) this.run(choice, y, x, w, rows, n, k);
        });
      };
      let best: GemmChoice = 'cublas';
      let bestMs = time('cublas') * (1 - MIN_GAIN);
      for (let i = 0; i < this.device.cublasLt.bf16Candidates(rows, n, k); i++) {
        const ms = time(i);
        if (ms < bestMs) [best, bestMs] = [i, ms];
      }
      this.choices.set(key, best);
      return best;
    } finally {
      this.device.free(x);
      this.device.free(y);
    }
  }
}
