import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { PagedSequences } from './paged-attention-args.ts';

export interface SparseSelectArgs extends PagedSequences {
  qkv: DevicePtr;
  /** The layer's key summaries [numBlocks, numKvHeads, 2, headDim] bf16. */
  summaries: DevicePtr;
  /** [numDecode] each decode's sequence and its flattened token index (AttentionPlan.sparse). */
  decodeSeqs: DevicePtr;
  decodeTokens: DevicePtr;
  numDecode: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Blocks attended in all, and the sink and recent-window blocks among them (sparseBlockCounts). */
  blocks: { budget: number; sinks: number; window: number };
  /** Blocks a draft tree's token may hold beyond the budget (its window runs to its cache index): 0 without trees. */
  treeBlocks: number;
  /** Step memory (the same addresses for the same step shape, so a recorded graph replays). */
  alloc: (bytes: number) => DevicePtr;
}

/**
 * Per decode and kv head, a compacted table of up to `width` block ids (the budget's, plus a draft
 * tree's), the keys they hold, and where the recent window's keys start (sparse-select.cu).
 */
export interface SparseSelection {
  tables: DevicePtr;
  lens: DevicePtr;
  windows: DevicePtr;
  width: number;
}

/** Candidate blocks one scoring CTA takes (SCORE_BLOCKS in sparse-select.cu). */
const SPARSE_SCORE_BLOCKS = 64;
/** CTAs of the thread block cluster that selects one decode's blocks for one kv head on Hopper (at most 8, the portable size). */
const SELECT_CLUSTER_CTAS = 8;

/**
 * Quest's block selection for the step's decodes, a verification chain's tokens among them
 * (sparse-select.cu): the candidates scored over a grid as wide as the block tables, then per
 * decode and kv head the budget's blocks chosen and compacted.
 */
export function launchSparseSelect(device: CudaDevice, a: SparseSelectArgs): SparseSelection {
  const rows = a.numDecode * a.numKvHeads;
  const width = a.blocks.budget + a.treeBlocks;
  const tables = a.alloc(Math.max(1, rows * width) * 4);
  const lens = a.alloc(Math.max(1, rows) * 4);
  const windows = a.alloc(Math.max(1, rows * 3) * 4);
  const scores = a.alloc(Math.max(1, rows * a.maxBlocksPerSeq) * 4);
  if (rows === 0) return { tables, lens, windows, width };
  const defines = { HEAD_DIM: a.headDim, GROUP: a.numHeads / a.numKvHeads };
  const { budget, sinks, window } = a.blocks;
  const score = device.kernel('sparse-select.cu', 'sparse_score_kernel', 'pppppppiiiiii', defines);
  device.launch(score, [a.numKvHeads, a.numDecode, Math.ceil(a.maxBlocksPerSeq / SPARSE_SCORE_BLOCKS)], [256], 0, [
    scores,
    a.qkv,
    a.summaries,
    a.decodeSeqs,
    a.decodeTokens,
    a.positions,
    a.blockTables,
    a.maxBlocksPerSeq,
    a.blockSize,
    a.numKvHeads,
    budget,
    sinks,
    window,
  ]);
  // On Hopper a thread block cluster shares each decode and kv head's selection (SELECT_CLUSTER).
  const cluster = device.info.arch === 'sm_90a' ? SELECT_CLUSTER_CTAS : 1;
  const select = device.kernel('sparse-select.cu', 'sparse_select_kernel', 'ppppppppppiiiiiii', { ...defines, SELECT_CLUSTER: cluster });
  device.launch(select, [a.numKvHeads * cluster, a.numDecode], [256], 0, [
    tables,
    lens,
    windows,
    scores,
    a.decodeSeqs,
    a.decodeTokens,
    a.queryStartLoc,
    a.positions,
    a.seqLens,
    a.blockTables,
    a.maxBlocksPerSeq,
    a.blockSize,
    a.numKvHeads,
    width,
    budget,
    sinks,
    window,
  ]);
  return { tables, lens, windows, width };
}
