import type { Activation } from '../../backend.ts';
import { KeelError } from '../../../errors.ts';
import { MAX_GRID_Y, type CudaDevice } from '../cuda-device.ts';
import type { CudaQuantizedTensor } from '../cuda-tensor.ts';
import type { DevicePtr } from '../driver-api.ts';
import { activationDefines } from './activation.ts';
import { GEMV_MAX_TOKENS, tileCapacity, type CudaExpertRouting } from './moe-route.ts';

const GEMV_WARPS = 4;
const GEMM_TILE_COLS = 64;
const GEMM_THREADS = 128;
const COMBINE_THREADS = 128;
const PERMUTE_THREADS = 128;

/**
 * Dynamic shared memory of moe_gemm_kernel: 3 stages of BM A rows and (2 or 1) × 64 B rows, 40
 * bf16 each; with MXFP4 weights a stage's B rows are 16-byte blocks and a scale byte each, with
 * quantized ones 16 (int4) or 32 (8-bit) bytes of codes and an f32 scale and zero each, and one
 * decoded bf16 B tile follows the stages.
 */
export function expertGemmSharedBytes(tileRows: number, gated: boolean, packed: 'bf16' | 'mxfp4' | 'int4' | '8-bit'): number {
  const bRows = (gated ? 2 : 1) * GEMM_TILE_COLS;
  if (packed === 'bf16') return 3 * (tileRows + bRows) * 40 * 2;
  const perRow = packed === 'mxfp4' ? 17 : packed === 'int4' ? 16 + 8 : 32 + 8;
  return 3 * (tileRows * 40 * 2 + bRows * perRow) + bRows * 40 * 2;
}

export interface ExpertMlpArgs {
  /** [numTokens, hidden] */
  x: DevicePtr;
  /** [numTokens, hidden], written. */
  out: DevicePtr;
  routing: CudaExpertRouting;
  first: number;
  count: number;
  hidden: number;
  /** Each expert's intermediate width. */
  n: number;
  /**
   * [count, 2n, hidden], [count, hidden, n]; biases [count, 2n] and [count, hidden], or 0. bf16,
   * or (`mxfp4`) MXFP4 blocks with their scale codes in gateUpScales and downScales (else 0), or
   * (`quant`) the codes of int4/int8/fp8 experts with their f32 scales there.
   */
  gateUp: DevicePtr;
  down: DevicePtr;
  mxfp4: boolean;
  /**
   * int4/int8/fp8 experts (moe-gemv.cu's and moe-gemm.cu's QUANT builds), both in one format and
   * taken by the step's kernels (`expertGemvTakes` up to GEMV_MAX_TOKENS tokens, `expertGemmTakes`
   * past them); null for bf16 and MXFP4.
   */
  quant: { gateUp: CudaQuantizedTensor; down: CudaQuantizedTensor } | null;
  gateUpScales: DevicePtr;
  downScales: DevicePtr;
  gateUpBias: DevicePtr;
  downBias: DevicePtr;
  activation: Activation;
  /** A step tensor of `elements` bf16 values (the per-pair intermediates). */
  scratch: (elements: number) => DevicePtr;
}

/**
 * The routed experts' MLPs and their weighted sum into `out`; hidden and n multiples of 8,
 * numTokens ≥ 1 (MXFP4: multiples of 32; quantized: expertGemvTakes or expertGemmTakes, by the
 * step's path). Up to GEMV_MAX_TOKENS tokens: GEMVs over the active experts (one tile each), and
 * for a single token the down projection fused with the sum. Larger steps: grouped tensor-core
 * GEMMs over the routing's tiles, then the sum. Every launch's grid follows from the step's shape.
 */
export function launchExpertMlp(device: CudaDevice, a: ExpertMlpArgs): void {
  const { routing, hidden, n, first, count } = a;
  const { numTokens, topK, tileRows, buffers: r } = routing;
  const pairs = numTokens * topK;
  const { ACT, alpha, limit } = activationDefines(a.activation);
  const h = a.scratch(pairs * n);
  const MXFP4 = a.mxfp4 ? 1 : 0;
  // Act-order experts read their inputs gathered into each expert's column order (moe-permute.cu):
  // the gate/up input by pair, read back with top_k 1, and the down input h by place, below.
  const gateUpPerm = a.quant?.gateUp.perm ?? 0;
  // Input-weighted routes (Llama 4): each pair's input row w · x, read by pair, and unit weights for the sum.
  const weighted = routing.weightInputs ? weightedInputs(device, a) : null;
  if (weighted !== null && gateUpPerm !== 0) throw new KeelError('invalid_model', 'act-order (desc_act) quantized experts do not combine with input-weighted routing (Llama 4) on the CUDA backend');
  const x = weighted !== null ? weighted.x : gateUpPerm === 0 ? a.x : permutedInput(device, a, a.x, gateUpPerm, hidden, true);
  const xTopK = gateUpPerm === 0 && weighted === null ? topK : 1;
  const combineWeights = weighted?.unit ?? r.weights;
  const downInput = () => (a.quant === null || a.quant.down.perm === 0 ? h : permutedInput(device, a, h, a.quant.down.perm, n, false));
  if (numTokens <= GEMV_MAX_TOKENS) {
    // One tile per active expert held here: at most min(count, pairs). A 16-byte chunk of weights
    // holds 8 bf16, 32 MXFP4 or int4, or 16 int8 or fp8 values.
    const tiles = Math.min(count, pairs);
    const chunk = a.quant !== null ? expertChunkCols(a.quant.gateUp) : a.mxfp4 ? 32 : 8;
    const [gq, dq] = [quantArgs(a.quant?.gateUp ?? null), quantArgs(a.quant?.down ?? null)];
    const gateUp = device.kernel('moe-gemv.cu', 'moe_gate_up_gemv_kernel', 'ppppppppppiiiiiiiff', { TOK: tileRows, ACT, MXFP4, ...gq.defines });
    device.launch(gateUp, [Math.ceil(n / GEMV_WARPS), tiles], [32 * GEMV_WARPS], 0, [
      h, x, a.gateUp, a.gateUpScales, gq.zeros, a.gateUpBias, r.sortedPairs, r.offsets, r.tileStart, r.tiles, first, count, xTopK, n, hidden / chunk,
      gq.groupChunks, gq.groups, alpha, limit,
    ]);
    const hd = downInput();
    if (numTokens === 1) {
      const downCombine = device.kernel('moe-gemv.cu', 'moe_down_combine_gemv_kernel', 'pppppppppiiiiii', { TOPK: topK, MXFP4, ...dq.defines });
      device.launch(downCombine, [Math.ceil(hidden / GEMV_WARPS), 1], [32 * GEMV_WARPS], 0, [
        a.out, hd, a.down, a.downScales, dq.zeros, a.downBias, r.ids, combineWeights, r.pairPos, first, count, hidden, n / chunk, dq.groupChunks, dq.groups,
      ]);
      return;
    }
    const y = a.scratch(pairs * hidden);
    const down = device.kernel('moe-gemv.cu', 'moe_down_gemv_kernel', 'pppppppppiiiiii', { TOK: tileRows, MXFP4, ...dq.defines });
    device.launch(down, [Math.ceil(hidden / GEMV_WARPS), tiles], [32 * GEMV_WARPS], 0, [
      y, hd, a.down, a.downScales, dq.zeros, a.downBias, r.offsets, r.tileStart, r.tiles, first, count, hidden, n / chunk, dq.groupChunks, dq.groups,
    ]);
    launchCombine(device, a.out, y, routing, combineWeights, first, count, hidden);
    return;
  }
  const tiles = tileCapacity(pairs, tileRows, count);
  if (tiles > MAX_GRID_Y) throw new KeelError('invalid_argument', `a step of ${numTokens} tokens needs ${tiles} expert tiles, more than one launch holds (${MAX_GRID_Y})`);
  const packed = a.quant !== null ? (a.quant.gateUp.format === 'int4' ? 'int4' : '8-bit') : a.mxfp4 ? 'mxfp4' : 'bf16';
  const gemm = (gated: boolean, out: DevicePtr, input: DevicePtr, w: DevicePtr, scales: DevicePtr, stack: CudaQuantizedTensor | null, bias: DevicePtr, nOut: number, kIn: number) => {
    const q = gemmQuantArgs(stack);
    const kernel = device.kernel('moe-gemm.cu', 'moe_gemm_kernel', 'ppppppppppiiiiiiiff', { BM: tileRows, GATED: gated ? 1 : 0, ...(gated ? { ACT } : {}), MXFP4, ...q.defines });
    device.launch(kernel, [Math.ceil(nOut / GEMM_TILE_COLS), tiles], [GEMM_THREADS], expertGemmSharedBytes(tileRows, gated, packed), [
      out, input, w, scales, q.zeros, bias, r.sortedPairs, r.offsets, r.tileStart, r.tiles, first, count, xTopK, nOut, kIn, q.groupStages, q.groups, alpha, limit,
    ]);
  };
  gemm(true, h, x, a.gateUp, a.gateUpScales, a.quant?.gateUp ?? null, a.gateUpBias, n, hidden);
  const y = a.scratch(pairs * hidden);
  gemm(false, y, downInput(), a.down, a.downScales, a.quant?.down ?? null, a.downBias, hidden, n);
  launchCombine(device, a.out, y, routing, combineWeights, first, count, hidden);
}

/**
 * For input-weighted routes (Llama 4, moe_weight_inputs_kernel): a step tensor [pairs, hidden] of
 * each pair's weight times its token's row of x, and f32 unit weights [pairs] for the sum.
 */
function weightedInputs(device: CudaDevice, a: ExpertMlpArgs): { x: DevicePtr; unit: DevicePtr } {
  const { numTokens, topK, buffers: r } = a.routing;
  const pairs = numTokens * topK;
  const x = a.scratch(pairs * a.hidden);
  // Two bf16 elements hold one f32.
  const unit = a.scratch(2 * pairs);
  const kernel = device.kernel('moe-permute.cu', 'moe_weight_inputs_kernel', 'ppppii');
  device.launch(kernel, [pairs, Math.ceil(a.hidden / PERMUTE_THREADS)], [PERMUTE_THREADS], 0, [x, unit, a.x, r.weights, topK, a.hidden]);
  return { x, unit };
}

/**
 * A step tensor [pairs, cols] of `input` gathered into each row's expert's column order
 * (moe_permute_input_kernel): byPair, the gate/up input x [tokens, cols] by pair; else the down
 * input h [places, cols] by place.
 */
function permutedInput(device: CudaDevice, a: ExpertMlpArgs, input: DevicePtr, perm: DevicePtr, cols: number, byPair: boolean): DevicePtr {
  const { numTokens, topK, buffers: r } = a.routing;
  const pairs = numTokens * topK;
  const out = a.scratch(pairs * cols);
  const kernel = device.kernel('moe-permute.cu', 'moe_permute_input_kernel', 'pppppiiiii');
  device.launch(kernel, [pairs, Math.ceil(cols / PERMUTE_THREADS)], [PERMUTE_THREADS], 0, [out, input, perm, r.ids, r.sortedPairs, a.first, a.count, topK, cols, byPair ? 1 : 0]);
  return out;
}

/** QUANT of moe-gemv.cu's builds. */
const QUANT_CODE = { int4: 1, int8: 2, 'fp8-e4m3': 3 } as const;

/** Columns of one 16-byte chunk of a quantized expert's codes (the expert GEMVs' unit). */
export function expertChunkCols(w: CudaQuantizedTensor): number {
  return w.format === 'int4' ? 32 : 16;
}

/** Whether the expert GEMVs take these quantized experts: a format they read, whole chunks per row, each inside one scale group. */
export function expertGemvTakes(w: CudaQuantizedTensor): boolean {
  const chunk = expertChunkCols(w);
  return w.format in QUANT_CODE && w.layout === 'rows' && w.cols % chunk === 0 && (w.groupSize % chunk === 0 || w.groupSize >= w.cols);
}

/** k columns of one stage of moe_gemm_kernel: a quantized expert's groups must hold whole stages. */
const GEMM_STAGE_COLS = 32;

/** Whether the grouped expert GEMM takes these quantized experts: a format it reads, whole stages per row, each inside one scale group. */
export function expertGemmTakes(w: CudaQuantizedTensor): boolean {
  return w.format in QUANT_CODE && w.layout === 'rows' && w.cols % GEMM_STAGE_COLS === 0 && (w.groupSize % GEMM_STAGE_COLS === 0 || w.groupSize >= w.cols);
}

/** A GEMM launch's quantization defines and arguments for one expert matrix stack (none for bf16 and MXFP4). */
function gemmQuantArgs(w: CudaQuantizedTensor | null): { defines: Record<string, number>; zeros: DevicePtr; groupStages: number; groups: number } {
  if (w === null) return { defines: {}, zeros: 0, groupStages: 1, groups: 1 };
  if (!expertGemmTakes(w)) throw new Error(`launchExpertMlp: quantized experts [${w.shape.join(', ')}] (${w.format}, groups of ${w.groupSize}) do not split into whole ${GEMM_STAGE_COLS}-column stages per scale group`);
  return {
    defines: { QUANT: QUANT_CODE[w.format as keyof typeof QUANT_CODE], ZEROS: w.zeros === 0 ? 0 : 1 },
    zeros: w.zeros,
    groupStages: Math.min(w.groupSize, w.cols) / GEMM_STAGE_COLS,
    groups: w.groups,
  };
}

/** A GEMV launch's quantization defines and arguments for one expert matrix stack (none for bf16 and MXFP4). */
function quantArgs(w: CudaQuantizedTensor | null): { defines: Record<string, number>; zeros: DevicePtr; groupChunks: number; groups: number } {
  if (w === null) return { defines: {}, zeros: 0, groupChunks: 1, groups: 1 };
  if (!expertGemvTakes(w)) throw new Error(`launchExpertMlp: quantized experts [${w.shape.join(', ')}] (${w.format}, groups of ${w.groupSize}) do not split into whole chunks per scale group`);
  const chunk = expertChunkCols(w);
  return {
    defines: { QUANT: QUANT_CODE[w.format as keyof typeof QUANT_CODE], ZEROS: w.zeros === 0 ? 0 : 1 },
    zeros: w.zeros,
    groupChunks: Math.min(w.groupSize, w.cols) / chunk,
    groups: w.groups,
  };
}

/** out [tokens, hidden] = Σ over each token's slots held here of weight · y[place]. */
function launchCombine(device: CudaDevice, out: DevicePtr, y: DevicePtr, routing: CudaExpertRouting, weights: DevicePtr, first: number, count: number, hidden: number): void {
  const { ids, pairPos } = routing.buffers;
  const hidden8 = hidden / 8;
  const kernel = device.kernel('moe-combine.cu', 'moe_combine_kernel', 'pppppiiii');
  device.launch(kernel, [routing.numTokens, Math.ceil(hidden8 / COMBINE_THREADS)], [COMBINE_THREADS], 0, [
    out, y, ids, weights, pairPos, first, count, routing.topK, hidden8,
  ]);
}
