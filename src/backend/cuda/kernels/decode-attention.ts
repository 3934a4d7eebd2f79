import { chooseDecodePartitions, DECODE_TILE_KEYS, MIN_KEYS_PER_PARTITION } from '../attention-plan.ts';
import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import type { SparseSelection } from './sparse-select.ts';
import { attentionOptionDefines, kernelWindow, kvCodeKernelArgs, type PagedAttentionArgs, positionKernelArgs, scoreScales, streamingKernelArgs } from './paged-attention-args.ts';

const THREADS = 128;

/** Dynamic shared memory of decode_attention_kernel (see the kernel's layout comment). */
export function decodeSharedBytes(headDim: number, group: number, dtype: KvCacheDtype): number {
  const row = headDim + 8;
  const quantized = dtype !== 'auto';
  const int4 = dtype === 'int4';
  // A quantized cache: two stages of codes (half a byte each with int4) and row scales (int4: a
  // scale and a minimum), one of f16 rows; bf16: two stages of rows. int4 keeps two more floats a head.
  const codes = quantized ? 2 * 2 * DECODE_TILE_KEYS * (int4 ? headDim / 2 : headDim) + 2 * 2 * DECODE_TILE_KEYS * 4 * (int4 ? 2 : 1) : 0;
  return codes + 2 * (quantized ? 1 : 2) * DECODE_TILE_KEYS * row * 2 + (group * headDim + group * DECODE_TILE_KEYS + (int4 ? 5 : 3) * group) * 4;
}

/** Bytes of f32 workspace the partial results of a split decode need. */
export function decodeWorkspaceBytes(numDecode: number, numHeads: number, numPartitions: number, headDim: number): number {
  return numDecode * numHeads * numPartitions * (headDim + 2) * 4;
}

/**
 * Which kernel runs a decode where both could: `tensor-cores` (decode-attention-mma.cu, wherever
 * its shape limits allow), `cuda-cores` (decode-attention.cu, which takes every case), or `auto`,
 * the tensor cores. On the H100 at 73fd71e (`keel bench attention`, both kernels alone over bf16)
 * they were faster at all twelve shapes timed: Qwen3-30B-A3B's heads at 256 tokens, batch 1, 9.4 µs
 * against 11.5; 256 decodes at 640 tokens 228 against 244; 8B's at 8k, batch 1, 23.3 against 25.6;
 * at 32k, batch 16, 769 against 839; in Qwen3-30B-A3B's batch-1 step (200 keys) 9.96 µs a layer
 * against 13.67. (Before session 26's changes to both kernels the H200 had the CUDA-core kernel
 * ahead on grids of several CTAs a multiprocessor with short partitions, and `auto` picked it there.)
 */
export type DecodeAttentionKernel = 'auto' | 'tensor-cores' | 'cuda-cores';
export const DECODE_ATTENTION_KERNELS: readonly DecodeAttentionKernel[] = ['auto', 'tensor-cores', 'cuda-cores'];

export interface DecodeAttentionArgs extends PagedAttentionArgs {
  /** [numDecode] each decode's sequence and its flattened token index (AttentionPlan). */
  decodeSeqs: DevicePtr;
  decodeTokens: DevicePtr;
  numDecode: number;
  maxDecodeSeqLen: number;
  /** Allocates the split-KV workspace (called only when the context is split). */
  workspace: (bytes: number) => DevicePtr;
  /** Quest's compacted block tables (sparse-select.ts): each (decode, kv head) attends to its own keys. Absent: dense. */
  sparse?: SparseSelection;
  /** With `sparse`, a draft tree's mask (BatchDescription.treeMask on the device, `words` per token), or null without trees. */
  treeMask?: { mask: DevicePtr; words: number } | null;
  kernel: DecodeAttentionKernel;
}

/**
 * Split-KV decode attention for every decode of the plan: the launch has partitions for the longest
 * context the tables hold, each decode uses those its own keys need (decode-split.cuh, partitions of
 * about MIN_KEYS_PER_PARTITION keys), and where it uses several the last of its CTAs merges them.
 */
export function launchDecodeAttention(device: CudaDevice, a: DecodeAttentionArgs): void {
  if (a.numDecode === 0) return;
  const { numHeads, numKvHeads, headDim } = a.shape;
  const group = numHeads / numKvHeads;
  // Partitions split the window; StreamingLLM's sinks go to the first partition besides.
  const window = kernelWindow(a.shape);
  const sparse = a.sparse ?? null;
  const longest = sparse === null ? a.maxDecodeSeqLen : Math.min(a.maxDecodeSeqLen, sparse.width * a.blockSize);
  // A query sees at most its window's keys, and at most its chunk's (chunked layers).
  const chunk = a.shape.attentionChunk ?? 0;
  const visible = Math.min(longest, window === 0 ? Infinity : window, chunk === 0 ? Infinity : chunk);
  const numPartitions = chooseDecodePartitions(a.numDecode, numKvHeads, visible, device.info.multiprocessorCount);
  let partAcc = 0;
  let partMl = 0;
  let arrival = 0;
  if (numPartitions > 1) {
    const accBytes = a.numDecode * numHeads * numPartitions * headDim * 4;
    partAcc = a.workspace(decodeWorkspaceBytes(a.numDecode, numHeads, numPartitions, headDim));
    partMl = partAcc + accBytes;
    arrival = device.arrivalCounters(a.numDecode * numKvHeads);
  }
  const partials = { partAcc, partMl, arrival, numPartitions };
  const tree = sparse === null ? null : (a.treeMask ?? null);
  const defines = { HEAD_DIM: headDim, GROUP: group, ...attentionOptionDefines(a), SPARSE: sparse === null ? 0 : 1, TREE: tree === null ? 0 : 1 };
  const { qScale, softcapLog2 } = scoreScales(a.shape);
  if (sparse === null && a.kernel !== 'cuda-cores' && runsOnTensorCores(device, a, group)) {
    launchDecodeAttentionMma(device, a, { group, window, partials, qScale, softcapLog2 });
  } else {
    const kernel = device.kernel('decode-attention.cu', 'decode_attention_kernel', 'ppppppppppppiiiffpiiipppiiippffppippiiffi', defines);
    device.launch(kernel, [numKvHeads, a.numDecode, numPartitions], [THREADS], withMergeScratch(decodeSharedBytes(headDim, group, a.dtype), numPartitions, group), [
      ...decodeArgsPrefix(a, partials),
      qScale,
      softcapLog2,
      a.sinks,
      window,
      MIN_KEYS_PER_PARTITION,
      numPartitions,
      ...streamingKernelArgs(a),
      ...kvCodeKernelArgs(a),
      sparse?.tables ?? 0,
      sparse?.lens ?? 0,
      sparse?.width ?? 0,
      sparse?.windows ?? 0,
      tree?.mask ?? 0,
      tree?.words ?? 0,
      ...positionKernelArgs(a.shape),
    ]);
  }
}

/** A split decode's partial results, and the arrival counters whose last CTA merges them (none with one partition). */
interface DecodePartials {
  partAcc: DevicePtr;
  partMl: DevicePtr;
  arrival: DevicePtr;
  numPartitions: number;
}

/**
 * A decode kernel's dynamic shared memory, at least what its merge of `numPartitions` partitions
 * takes once the keys are done (decode-partials.cuh: a weight a partition and a normalizer for
 * each of the kv head's `group` query heads).
 */
function withMergeScratch(sharedBytes: number, numPartitions: number, group: number): number {
  return numPartitions > 1 ? Math.max(sharedBytes, group * (numPartitions + 1) * 4) : sharedBytes;
}

/** The arguments both decode kernels take first: output, partials, the step's tables, the pools' geometry. */
function decodeArgsPrefix(a: DecodeAttentionArgs, p: DecodePartials): number[] {
  return [a.out, p.partAcc, p.partMl, p.arrival, a.qkv, a.kPool, a.vPool, a.decodeSeqs, a.decodeTokens, a.positions, a.seqLens, a.blockTables, a.maxBlocksPerSeq, a.blockSize, a.shape.numKvHeads];
}

/**
 * Whether decode-attention-mma.cu (tensor cores) takes a decode: a group of at most 16 query heads
 * (one mma row tile), head dims a multiple of 32 (int4: 64) up to 256, no StreamingLLM (Quest's
 * sparse tables are the caller's to rule out), and its shared memory within the GPU's opt-in limit
 * (bf16 at head dim 128 takes 109 KB, more than the 99 KB of Ada and consumer Ampere cards).
 */
function runsOnTensorCores(device: CudaDevice, a: DecodeAttentionArgs, group: number): boolean {
  const { headDim, streaming } = a.shape;
  if (group > 16 || headDim > 256 || streaming !== null) return false;
  return headDim % (a.dtype === 'int4' ? 64 : 32) === 0 && decodeMmaSharedBytes(headDim, a.dtype) <= device.info.maxSharedMemoryPerBlockOptin;
}

/** decode_attention_mma_kernel's keys per tile (TK) and warps (WARPS). */
const MMA_TILE_KEYS = 64;
const MMA_WARPS = 4;

/** Dynamic shared memory of decode_attention_mma_kernel (see the kernel's layout comment: STAGES, CODE_ROW, ROWB, RS). */
function decodeMmaSharedBytes(headDim: number, dtype: KvCacheDtype): number {
  const int4 = dtype === 'int4';
  const bf16 = dtype === 'auto';
  const stages = int4 ? 4 : bf16 && headDim > 128 ? 2 : 3;
  const rowBytes = bf16 ? 2 * headDim : int4 ? headDim / 2 : headDim;
  const codes = stages * 2 * MMA_TILE_KEYS * (rowBytes + 16);
  const scales = stages * 2 * MMA_TILE_KEYS * (int4 ? 2 : 1) * 4;
  return codes + scales + 16 * (headDim + 8) * 2 + MMA_WARPS * 16 * 2 * 4;
}

function launchDecodeAttentionMma(
  device: CudaDevice,
  a: DecodeAttentionArgs,
  p: { group: number; window: number; partials: DecodePartials; qScale: number; softcapLog2: number },
): void {
  const { numKvHeads, headDim } = a.shape;
  const { SOFTCAP, SINKS, KV_DTYPE } = attentionOptionDefines(a);
  const defines = { HEAD_DIM: headDim, GROUP: p.group, KV_DTYPE, SOFTCAP, SINKS };
  const kernel = device.kernel('decode-attention-mma.cu', 'decode_attention_mma_kernel', 'ppppppppppppiiiffpiiippffiffi', defines);
  const numPartitions = p.partials.numPartitions;
  device.launch(kernel, [numKvHeads, a.numDecode, numPartitions], [THREADS], withMergeScratch(decodeMmaSharedBytes(headDim, a.dtype), numPartitions, p.group), [
    ...decodeArgsPrefix(a, p.partials),
    p.qScale,
    p.softcapLog2,
    a.sinks,
    p.window,
    MIN_KEYS_PER_PARTITION,
    numPartitions,
    ...kvCodeKernelArgs(a),
    ...positionKernelArgs(a.shape),
  ]);
}
