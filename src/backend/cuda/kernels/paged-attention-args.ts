import { attentionSpan, type AttentionParams } from '../../backend.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { KvCacheDtype } from '../../../step/kv-cache-layout.ts';
import { kvDtypeDefine } from './kv-quantize.ts';

/**
 * Where a step's sequences lie in one layer's paged pool: the step's index arrays (token ranges,
 * positions, lengths) and the block tables of the layer's group, which every paged kernel reads.
 */
export interface PagedSequences {
  queryStartLoc: DevicePtr;
  positions: DevicePtr;
  seqLens: DevicePtr;
  blockTables: DevicePtr;
  maxBlocksPerSeq: number;
  blockSize: number;
}

/** Device inputs both attention kernels read: the packed qkv, one layer's pools and the step's index arrays. */
export interface PagedAttentionArgs extends PagedSequences {
  /** [numTokens, numHeads * headDim] bf16. */
  out: DevicePtr;
  /** [numTokens, (numHeads + 2 * numKvHeads) * headDim] bf16, queries rotated unless shape.streaming is set. */
  qkv: DevicePtr;
  /** The layer's key and value pools: bf16, or 8-bit codes (`dtype`). */
  kPool: DevicePtr;
  vPool: DevicePtr;
  dtype: KvCacheDtype;
  /** int8: the pools' float32 scales [slots, numKvHeads]; 0 otherwise. */
  kScales: DevicePtr;
  vScales: DevicePtr;
  shape: AttentionParams;
  /** [numHeads] bf16 sink logits, or 0 when the layer has none (shape.sinks is null). */
  sinks: DevicePtr;
  /** With shape.streaming: the f32 rotary table the kernels rotate queries with, and each token's row. */
  rotary: { cos: DevicePtr; sin: DevicePtr; rotaryRows: DevicePtr; rotaryDim: number } | null;
}

/**
 * The trailing arguments both attention kernels take for StreamingLLM (read only when compiled
 * with STREAMING): cos, sin, rotary_rows, rotary_dim, stream_sinks and sink_row_cap, the row of
 * a query's position inside the cache once its window has left the sinks behind.
 */
export function streamingKernelArgs(a: PagedAttentionArgs): number[] {
  const { streaming } = a.shape;
  if (streaming === null || a.rotary === null) return [0, 0, 0, 0, 0, 0];
  const { cos, sin, rotaryRows, rotaryDim } = a.rotary;
  return [cos, sin, rotaryRows, rotaryDim, attentionSpan(a.shape).sinks, streaming.sinks + streaming.window - 1];
}

/**
 * The trailing arguments every attention kernel takes for the per-query options of Llama 4 and
 * Ministral 3 (attention-span.cuh): chunk, temp_floor, temp_scale and temp_offset, each 0 when the
 * layer has none.
 */
export function positionKernelArgs(shape: AttentionParams): number[] {
  const temperature = shape.queryTemperature ?? null;
  return [shape.attentionChunk ?? 0, temperature?.floorScale ?? 0, temperature?.attnScale ?? 0, temperature?.positionOffset ?? 0];
}

/** The window both kernels mask by: the layer's own, or StreamingLLM's (0 for none). */
export function kernelWindow(shape: AttentionParams): number {
  return attentionSpan(shape).window ?? 0;
}

/**
 * How the kernels turn q · k into a score in the log2 domain (they exponentiate with exp2):
 * `qScale` · q · k, or with soft-capping `softcapLog2` · tanh(`qScale` · q · k), which is
 * cap · tanh(scale · q · k / cap) · log2(e). `softcapLog2` is 0 (unread) without a cap.
 */
export function scoreScales(shape: AttentionParams): { qScale: number; softcapLog2: number } {
  if (shape.softcap === null) return { qScale: shape.scale * Math.LOG2E, softcapLog2: 0 };
  return { qScale: shape.scale / shape.softcap, softcapLog2: shape.softcap * Math.LOG2E };
}

/** The defines that specialize both attention kernels to a layer's options and its cache's dtype (off costs nothing). */
export function attentionOptionDefines(a: PagedAttentionArgs): { SOFTCAP: number; SINKS: number; STREAMING: number; KV_DTYPE: number } {
  const { shape } = a;
  return { SOFTCAP: shape.softcap === null ? 0 : 1, SINKS: shape.sinks === null ? 0 : 1, STREAMING: shape.streaming === null ? 0 : 1, KV_DTYPE: kvDtypeDefine(a.dtype) };
}

/** The trailing arguments both attention kernels take for an 8-bit cache: k_scales, v_scales (int8), k_scale, v_scale (fp8). */
export function kvCodeKernelArgs(a: PagedAttentionArgs): number[] {
  return [a.kScales, a.vScales, a.shape.kvScales?.k ?? 1, a.shape.kvScales?.v ?? 1];
}
