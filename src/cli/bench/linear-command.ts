import { KeelError } from '../../errors.ts';
import { writeResult } from '../../bench/result-file.ts';
import { collectEnvironment, modelFreeRun } from '../../bench/run-environment.ts';
import { DEFAULT_BENCH_ROWS, LINEAR_BENCH_FORMATS as FORMATS, linearShapeProblem, LLAMA_8B_SHAPES } from '../../bench/linear-bench-options.ts';
import { parseFlags } from '../parse-flags.ts';
import { choiceList, commaList } from './bench-flags.ts';

const DEFAULT_SHAPES = LLAMA_8B_SHAPES.map(([n, k]) => `${n}x${k}`).join(',');
const DEFAULT_ROWS = DEFAULT_BENCH_ROWS.join(',');

export const LINEAR_HELP = `Usage: keel bench linear [--format LIST] [--rows LIST] [--shape LIST] [--output FILE]

Times Keel's linear-layer kernels alone on the GPU (CUDA events over graph replays), for each weight
[n, k] (out x in), batch rows and format: microseconds, weight GB/s (beside the device's measured read
bandwidth), TFLOP/s and the speed-up over bf16 cuBLAS on the same shape. Quantized formats (fp8, int8,
int4, nf4, quantized as --quantization does) are timed on every kernel that takes the batch: the
decode GEMV up to 8 rows (int4 and fp8 also on the tensor-core GEMV, path "gemv-mma", whether or
not KEEL_QUANTIZED_GEMV makes the backend use it), past it the tensor-core GEMM and dequantize + cuBLAS, and fp8, int8 and
int4 also on the fragment-layout (Marlin-style) GEMM at every row count (path "marlin", whether or
not KEEL_MARLIN makes the backend use it), and fp8 with one scale per row past 8 rows on W8A8 too (path
"w8a8": activations quantized per token, cuBLASLt's FP8 GEMM; the backend's path for prefill batches
under KEEL_FP8_GEMM=w8a8), so the thresholds between them can be read off. bf16 also times each of cuBLASLt's
heuristic candidates (up to 8): "cublaslt-first" is its first choice, "cublaslt-best" the fastest, what
choosing per shape would gain over cuBLAS. llm-int8 times the backend's whole LLM.int8() decomposition. mxfp4 exists only for MoE experts: it times one expert MLP (gate/up [n, k],
down [k, n/2]) beside the same MLP in bf16. aqlm-2x8 and aqlm-1x16 (random codes) time the AQLM
codebook-lookup GEMV up to 8 rows, past it dequantize + cuBLAS. 2:4 prunes the weight by magnitude
and times cuSPARSELt at every row count (rows padded to 16) and the backend's choice (the dense GEMV
up to 8 rows); its weight GB/s counts the compressed bytes. Needs the CUDA backend. Writes JSON to ./bench-results/
(or --output).

  --format LIST                  comma-separated, of ${FORMATS.join(', ')} (default: all)
  --rows LIST                    batch rows (default ${DEFAULT_ROWS})
  --shape LIST                   weights as NxK (default Llama-3.1-8B's: ${DEFAULT_SHAPES})
  --output FILE                  where to write the JSON result`;

export async function linearCommand(argv: string[]): Promise<void> {
  const { values } = parseFlags('keel bench linear', {
    args: argv,
    options: { format: { type: 'string' }, rows: { type: 'string' }, shape: { type: 'string' }, output: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log(LINEAR_HELP);
    return;
  }
  const formats = choiceList('--format', values.format ?? FORMATS.join(','), FORMATS);
  const rows = commaList('--rows', values.rows ?? DEFAULT_ROWS).map((r) => {
    const n = Number(r);
    if (!(Number.isInteger(n) && n >= 1)) throw new KeelError('invalid_argument', `--rows: "${r}" is not a positive integer`);
    return n;
  });
  const shapes = commaList('--shape', values.shape ?? DEFAULT_SHAPES).map((s): [number, number] => {
    const match = /^(\d+)x(\d+)$/.exec(s);
    if (match === null) throw new KeelError('invalid_argument', `--shape: "${s}" is not NxK (out x in, e.g. 4096x14336)`);
    const shape: [number, number] = [Number(match[1]), Number(match[2])];
    const problem = linearShapeProblem(shape[0], shape[1], formats);
    if (problem !== null) throw new KeelError('invalid_argument', `--shape: ${problem}`);
    return shape;
  });
  const { cudaAvailability } = await import('../../backend/cuda/availability.ts');
  const { runLinearBenchmark } = await import('../../bench/linear-benchmark.ts');
  const available = cudaAvailability();
  if (!available.ok) throw new KeelError('unavailable', `keel bench linear needs the CUDA backend: ${available.reason}`);
  const started = collectEnvironment({ backend: 'cuda', name: available.deviceName, cuda_version: null });
  const result = runLinearBenchmark({
    formats,
    rows,
    shapes,
    onFigure: (f) =>
      console.log(
        `${f.op} [${f.n}, ${f.k}] rows ${String(f.rows).padEnd(4)} ${f.format.padEnd(9)} ${f.path.padEnd(17)} ${f.us.toFixed(1).padStart(9)} us ${f.gb_per_s.toFixed(0).padStart(6)} GB/s ${f.tflops.toFixed(1).padStart(6)} TFLOP/s  x${f.speedup_vs_bf16.toFixed(2)}`,
      ),
  });
  const path = writeResult(
    {
      ...modelFreeRun(started, result.driverCudaVersion),
      config: { formats, rows, shapes: shapes.map(([n, k]) => `${n}x${k}`), kernels: 'quantized-linear.cu, gemv-mma.cu, quantized-gemm.cu, marlin-gemm.cu, moe-gemv.cu, moe-gemm.cu, fp8-activations.cu, cuBLASLt, cuSPARSELt', timing: 'CUDA events over graph replays of 20 calls, median of 7', weights: 'random bf16, round to nearest' },
      suite: 'linear',
      results: { figures: result.figures, read_gb_per_s: result.read_gb_per_s },
    },
    values.output,
  );
  console.log(`device read bandwidth ${result.read_gb_per_s.toFixed(0)} GB/s`);
  console.log(`wrote ${path}`);
}
