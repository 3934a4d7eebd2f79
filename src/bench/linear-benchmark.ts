// The linear-layer kernels timed on the GPU (what `keel bench linear` reports): every weight
// format at every batch size on the given [n, k] shapes (a weight [out, in]), as achieved weight
// GB/s and TFLOP/s, against bf16 cuBLAS on the same shape. Timing: CUDA events over CUDA-graph
// replays (graph-timing.ts). Random weights: the kernels' speed does not depend on the values.
//
// Quantized formats (fp8, int8, int4, round to nearest as --quantization makes them) are timed on
// each kernel that can take the batch, not only the one the backend picks, so that the thresholds
// between them (QUANTIZED_GEMV_MAX_ROWS, QUANTIZED_GEMM_MAX_ROWS) can be set from the figures:
// the decode GEMV up to its rows, then the tensor-core GEMM and dequantize + cuBLAS; and fp8, int8
// and int4 on the fragment-layout GEMM (marlin-gemm.cu) at every row count, from a copy of the
// weight re-laid as the backend's KEEL_MARLIN=1 loading does. mxfp4 only
// exists for MoE experts: it is timed as one expert's MLP (gate/up [n, k], down [k, n / 2], every
// row routed to it) beside the same MLP in bf16. 2:4 prunes the weight by magnitude and times
// cuSPARSELt alone at every row count (`cusparselt`, rows padded to a multiple of 16) and the
// backend's linear (`keel-2:4`: the dense GEMV at decode sizes, cuSPARSELt past them). AQLM
// (aqlm-2x8, aqlm-1x16: random codes over every codebook vector) is timed on its codebook-lookup
// GEMV up to its rows, then dequantize + cuBLAS.
import type { Tensor } from '../backend/backend.ts';
import { CudaBackend } from '../backend/cuda/cuda-backend.ts';
import { CudaQuantizedTensor, type CudaSparse24Tensor, type CudaTensor } from '../backend/cuda/cuda-tensor.ts';
import { SPARSE_ROWS_MULTIPLE } from '../backend/cuda/cusparselt.ts';
import { prune24 } from '../tensor/prune24.ts';
import { compressSparse24 } from '../tensor/sparse24.ts';
import { launchQuantizedGemm } from '../backend/cuda/kernels/quantized-gemm.ts';
import { launchW8a8Linear, w8a8Fits } from '../backend/cuda/kernels/w8a8-linear.ts';
import { launchDequantize, launchQuantizedGemv, QUANTIZED_GEMV_MAX_ROWS } from '../backend/cuda/kernels/quantized-linear.ts';
import { gemvMmaFits, launchGemvMma } from '../backend/cuda/kernels/gemv-mma.ts';
import { AQLM_GEMV_MAX_ROWS, launchAqlmDequantize, launchAqlmGemv } from '../backend/cuda/kernels/aqlm-linear.ts';
import { emptyAqlmWeight } from '../tensor/aqlm.ts';
import { floatToF16Bits, halfToFloatTable } from '../tensor/host-dtype.ts';
import { launchMarlinGemm } from '../backend/cuda/kernels/marlin-gemm.ts';
import { launchMarlinLayout, marlinProblem } from '../backend/cuda/kernels/marlin-layout.ts';
import { describeBatch } from '../step/batch.ts';
import { float32Tensor } from '../tensor/host-ops.ts';
import { quantizeMxfp4 } from '../tensor/mxfp4.ts';
import { quantizeRoundToNearest, type LinearQuantization } from '../tensor/quantize-rtn.ts';
import { aqlmLayout, AQLM_GROUP, type AqlmFormat, type QuantizedWeight } from '../tensor/quantized-weight.ts';
import { storedSize } from '../tensor/stored-size.ts';
import { medianGraphMs } from './graph-timing.ts';
import { linearShapeProblem, type LinearBenchFormat, type LinearPath } from './linear-bench-options.ts';
import { bf16Tensor, randomBf16Values, seededRng } from './synthetic-batch.ts';

export interface LinearFigure {
  /** `linear`: x [rows, k] · Wᵀ with W [n, k]; `expert-mlp`: one MoE expert, gate/up [n, k] and down [k, n / 2]. */
  op: 'linear' | 'expert-mlp';
  n: number;
  k: number;
  rows: number;
  format: LinearBenchFormat;
  path: LinearPath;
  us: number;
  /** Bytes of the weight (codes, scales, zeros) the call reads. */
  weight_bytes: number;
  /** weight_bytes per second. */
  gb_per_s: number;
  tflops: number;
  /** The same op's bf16 time over this one: cuBLAS for linear, the bf16 expert MLP for experts. */
  speedup_vs_bf16: number;
}

export interface LinearBenchmark {
  deviceName: string;
  driverCudaVersion: number;
  read_gb_per_s: number;
  figures: LinearFigure[];
}

export interface LinearBenchOptions {
  formats: readonly LinearBenchFormat[];
  rows: readonly number[];
  shapes: readonly [number, number][];
  /** Called with each figure as it is measured. */
  onFigure?: (f: LinearFigure) => void;
}

const REPS = 20;
/** Split-K partial sums of the directly launched kernels (at most 8 splits × 256 rows × the widest n of f32 use far less). */
const WORKSPACE_BYTES = 256 << 20;

export function runLinearBenchmark(options: LinearBenchOptions, ordinal = 0): LinearBenchmark {
  for (const [n, k] of options.shapes) {
    const problem = linearShapeProblem(n, k, options.formats);
    if (problem !== null) throw new Error(problem);
  }
  // Keel's row layout for the classic kernels; the fragment-layout copies are made below.
  const backend = new CudaBackend({ device: ordinal, arenaBytes: 1 << 30, marlin: false });
  const rng = seededRng(4321);
  const workspace = backend.device.alloc(WORKSPACE_BYTES);
  const figures: LinearFigure[] = [];
  const add = (f: LinearFigure) => {
    figures.push(f);
    options.onFigure?.(f);
  };
  try {
    for (const [n, k] of options.shapes) {
      const values = randomBf16Values(rng, n * k, 0.02);
      const dense = backend.loadWeight(bf16Tensor([n, k], values));
      const quantized = options.formats
        .filter((f): f is LinearQuantization => f === 'fp8' || f === 'int8' || f === 'int4' || f === 'nf4')
        .map((format) => ({ format, host: quantizeRoundToNearest(values, n, k, format) }))
        .map(({ format, host }) => {
          const tensor = backend.loadQuantizedWeight(host) as CudaQuantizedTensor;
          return { format, bytes: quantizedBytes(host), tensor, marlin: marlinProblem(host) === null ? marlinCopy(backend, tensor) : null };
        });
      const aqlm = options.formats
        .filter((f): f is AqlmFormat => f === 'aqlm-2x8' || f === 'aqlm-1x16')
        .map((format) => ({ format, host: randomAqlm(format, n, k, rng) }))
        .map(({ format, host }) => ({ format, bytes: quantizedBytes(host), tensor: backend.loadQuantizedWeight(host) as CudaQuantizedTensor }));
      const dequantized = quantized.length + aqlm.length > 0 ? backend.device.alloc(2 * n * k) : 0;
      const llmInt8Host = options.formats.includes('llm-int8') ? quantizeRoundToNearest(values, n, k, 'llm-int8') : null;
      const llmInt8 = llmInt8Host === null ? null : { bytes: quantizedBytes(llmInt8Host), tensor: backend.loadQuantizedWeight(llmInt8Host) };
      const experts = options.formats.includes('mxfp4') ? expertPair(backend, rng, n, k) : null;
      const sparse = options.formats.includes('2:4') ? (backend.loadSparseWeight(compressSparse24(bf16Tensor([n, k], prune24(values, n, k, null)), `[${n}, ${k}]`)) as CudaSparse24Tensor) : null;
      for (const rows of options.rows) {
        const step = () => backend.beginStep(describeBatch([{ tokens: [1], startPos: 0, blockTables: [[0]] }], 16));
        step();
        const x = backend.loadWeight(bf16Tensor([rows, k], randomBf16Values(rng, rows * k, 1)));
        const xPtr = (x as CudaTensor).ptr;
        const out = backend.device.alloc(2 * rows * n);
        const flops = 2 * rows * n * k;
        const figure = (format: LinearBenchFormat, path: LinearPath, ms: number, bytes: number, bf16Ms: number, op: LinearFigure['op'] = 'linear', f = flops): LinearFigure => ({
          op, n, k, rows, format, path, us: ms * 1e3, weight_bytes: bytes, gb_per_s: bytes / (ms * 1e-3) / 1e9, tflops: f / (ms * 1e-3) / 1e12, speedup_vs_bf16: bf16Ms / ms,
        });
        const densePtr = (dense as CudaTensor).ptr;
        const cublasMs = medianGraphMs(backend, () => () => backend.device.cublas.linearBf16(out, xPtr, densePtr, rows, n, k), REPS);
        add(figure('bf16', 'cublas', cublasMs, 2 * n * k, cublasMs));
        if (options.formats.includes('bf16')) {
          step();
          add(figure('bf16', 'keel-bf16', medianGraphMs(backend, () => () => backend.linear(x, dense, null), REPS), 2 * n * k, cublasMs));
          // cuBLASLt's heuristic candidates each timed: its first choice, and the fastest (what tuning per shape would gain over cuBLAS's pick).
          const lt = backend.device.cublasLt;
          const candidates = Array.from({ length: lt.bf16Candidates(rows, n, k) }, (_, i) => medianGraphMs(backend, () => () => lt.bf16(out, xPtr, densePtr, rows, n, k, i), REPS));
          if (candidates.length > 0) {
            add(figure('bf16', 'cublaslt-first', candidates[0], 2 * n * k, cublasMs));
            add(figure('bf16', 'cublaslt-best', Math.min(...candidates), 2 * n * k, cublasMs));
          }
        }
        const ws = () => workspace;
        // The weight dequantized into the scratch matrix, then cuBLAS: the path past the kernels' rows.
        const dequantizeCublasFigure = (format: LinearBenchFormat, bytes: number, dequantize: () => void): LinearFigure => {
          const ms = medianGraphMs(
            backend,
            () => () => {
              dequantize();
              backend.device.cublas.linearBf16(out, xPtr, dequantized, rows, n, k);
            },
            REPS,
          );
          return figure(format, 'dequantize+cublas', ms, bytes, cublasMs);
        };
        for (const q of quantized) {
          if (q.marlin !== null) {
            const marlin = q.marlin;
            add(figure(q.format, 'marlin', medianGraphMs(backend, () => () => launchMarlinGemm(backend.device, out, xPtr, marlin, 0, rows, ws), REPS), q.bytes, cublasMs));
          }
          if (rows <= QUANTIZED_GEMV_MAX_ROWS) {
            add(figure(q.format, 'gemv', medianGraphMs(backend, () => () => launchQuantizedGemv(backend.device, out, xPtr, q.tensor, 0, rows, ws), REPS), q.bytes, cublasMs));
            if (gemvMmaFits(q.tensor)) {
              add(figure(q.format, 'gemv-mma', medianGraphMs(backend, () => () => launchGemvMma(backend.device, out, xPtr, q.tensor, 0, rows, ws), REPS), q.bytes, cublasMs));
            }
            continue;
          }
          add(figure(q.format, 'gemm', medianGraphMs(backend, () => () => launchQuantizedGemm(backend.device, out, xPtr, q.tensor, 0, rows, ws), REPS), q.bytes, cublasMs));
          add(dequantizeCublasFigure(q.format, q.bytes, () => launchDequantize(backend.device, dequantized, q.tensor)));
          // The activations quantized per token and cuBLASLt's FP8 GEMM: what KEEL_FP8_GEMM=w8a8 runs past the GEMM's rows.
          if (w8a8Fits(q.tensor) && backend.device.cublasLt.fp8RowScaledFits(rows, n, k)) {
            const scratch = { codes: backend.device.alloc(rows * k), scales: backend.device.alloc(4 * rows) };
            add(figure(q.format, 'w8a8', medianGraphMs(backend, () => () => launchW8a8Linear(backend.device, out, xPtr, q.tensor, 0, rows, scratch), REPS), q.bytes, cublasMs));
            backend.device.free(scratch.codes);
            backend.device.free(scratch.scales);
          }
        }
        for (const q of aqlm) {
          if (rows <= AQLM_GEMV_MAX_ROWS) {
            add(figure(q.format, 'gemv', medianGraphMs(backend, () => () => launchAqlmGemv(backend.device, out, xPtr, q.tensor, 0, rows), REPS), q.bytes, cublasMs));
            continue;
          }
          add(dequantizeCublasFigure(q.format, q.bytes, () => launchAqlmDequantize(backend.device, dequantized, q.tensor)));
        }
        if (llmInt8 !== null) {
          // The backend's whole LLM.int8() decomposition (row stats, outlier list, activation quantizer, product), as a step runs it.
          step();
          add(figure('llm-int8', 'llm-int8', medianGraphMs(backend, () => () => backend.linear(x, llmInt8.tensor, null), REPS), llmInt8.bytes, cublasMs));
        }
        if (sparse !== null && sparse.compressed !== null) {
          // cuSPARSELt alone at every row count (rows padded to its multiple, as the backend pads
          // them), then the backend's own choice (the dense GEMV for decode-sized batches).
          const compressed = sparse.compressed;
          const padded = Math.ceil(rows / SPARSE_ROWS_MULTIPLE) * SPARSE_ROWS_MULTIPLE;
          const xs = backend.device.alloc(2 * padded * k);
          const ys = backend.device.alloc(2 * padded * n);
          const sparseWorkspace = Math.max(16, backend.device.cusparseLt.plan(compressed, padded).workspaceBytes);
          const sparseWs = backend.device.alloc(sparseWorkspace);
          backend.device.copyAsync(xs, xPtr, 2 * rows * k);
          const bytes = compressed.compressedBytes;
          add(figure('2:4', 'cusparselt', medianGraphMs(backend, () => () => backend.device.cusparseLt.linear(ys, xs, compressed, padded, sparseWs), REPS), bytes, cublasMs));
          step();
          add(figure('2:4', 'keel-2:4', medianGraphMs(backend, () => () => backend.linear(x, sparse, null), REPS), bytes, cublasMs));
          for (const ptr of [xs, ys, sparseWs]) backend.device.free(ptr);
        }
        if (experts !== null) {
          const expertFlops = 2 * rows * (n * k + (k * n) / 2);
          const time = (weights: { gateUp: Tensor; down: Tensor }) => {
            step();
            const logits = backend.loadWeight(float32Tensor(new Float32Array(rows), [rows, 1]), { float32: true });
            const routing = backend.routeExperts(logits, { topK: 1, scoring: 'softmax', selectionBias: null, groups: null, normalize: false, scale: 1 });
            const w = { first: 0, count: 1, gateUp: weights.gateUp, down: weights.down, gateUpBias: null, downBias: null };
            return medianGraphMs(backend, () => () => backend.expertMlp(x, routing, w, { kind: 'clamped-swiglu', alpha: 1.702, limit: 7 }), REPS);
          };
          const bf16Ms = time(experts.bf16);
          add(figure('bf16', 'expert-mlp', bf16Ms, experts.bf16Bytes, bf16Ms, 'expert-mlp', expertFlops));
          add(figure('mxfp4', 'expert-mlp', time(experts.mxfp4), experts.mxfp4Bytes, bf16Ms, 'expert-mlp', expertFlops));
        }
        backend.device.free(out);
      }
      if (dequantized !== 0) backend.device.free(dequantized);
      for (const q of quantized) if (q.marlin !== null) for (const ptr of [q.marlin.codes, q.marlin.scales, q.marlin.zeros]) if (ptr !== 0) backend.device.free(ptr);
    }
    return {
      deviceName: backend.device.info.name,
      driverCudaVersion: backend.device.info.driverCudaVersion,
      read_gb_per_s: backend.measureMemoryBandwidth() / 1e9,
      figures,
    };
  } finally {
    backend.device.free(workspace);
    backend.dispose();
  }
}

/** A copy of a weight in Keel's row layout re-laid in the fragment layout, in memory of its own. */
function marlinCopy(backend: CudaBackend, w: CudaQuantizedTensor): CudaQuantizedTensor {
  const device = backend.device;
  const groups = w.rows * w.groups;
  const to = { codes: device.alloc(w.rows * w.rowBytes), scales: device.alloc(4 * groups), zeros: w.zeros === 0 ? 0 : device.alloc(groups) };
  launchMarlinLayout(device, to, w, w);
  device.synchronize();
  return new CudaQuantizedTensor({ ...w, shape: w.shape, ...to, layout: 'marlin' });
}

/** Bytes a quantized weight's kernels read on CUDA: its stored size, AQLM's codebooks in float16. */
function quantizedBytes(w: QuantizedWeight): number {
  const { elements, bytes } = storedSize(w);
  return bytes + 2 * elements;
}

/** An AQLM weight [n, k] of random codes (every codebook vector equally likely) and float16 codebooks. */
function randomAqlm(format: AqlmFormat, n: number, k: number, rng: () => number): QuantizedWeight {
  const { codebooks, size } = aqlmLayout(format);
  const half = halfToFloatTable();
  const values = Float32Array.from({ length: codebooks * size * AQLM_GROUP }, () => half[floatToF16Bits(0.05 * (2 * rng() - 1))]);
  const w = emptyAqlmWeight(format, n, k, values);
  for (let i = 0; i < w.codes.length; i++) w.codes[i] = Math.floor(rng() * 256);
  w.scales.fill(0.5);
  return w;
}

/** One expert of intermediate width n / 2 over hidden size k, in bf16 and in MXFP4. */
function expertPair(backend: CudaBackend, rng: () => number, n: number, k: number) {
  const gateUpValues = randomBf16Values(rng, n * k, 0.02);
  const downValues = randomBf16Values(rng, (k * n) / 2, 0.02);
  const bf16 = { gateUp: backend.loadWeight(bf16Tensor([1, n, k], gateUpValues)), down: backend.loadWeight(bf16Tensor([1, k, n / 2], downValues)) };
  const mxfp4 = {
    gateUp: backend.loadMxfp4Weight(quantizeMxfp4(gateUpValues, [1, n, k])),
    down: backend.loadMxfp4Weight(quantizeMxfp4(downValues, [1, k, n / 2])),
  };
  const elements = n * k + (k * n) / 2;
  return { bf16, mxfp4, bf16Bytes: 2 * elements, mxfp4Bytes: elements / 2 + elements / 32 };
}
