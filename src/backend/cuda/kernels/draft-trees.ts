import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

/** A tree table on the device (draft-trees.cu): tokens, parents, path log-probabilities, each [numTrees, size]. */
export interface DraftTreeTable {
  ptr: DevicePtr;
  numTrees: number;
  size: number;
}

/** The latest sampling pass's top candidates: [rows, topWidth] ids and float32 log-probabilities. */
export interface TopCandidates {
  ids: DevicePtr;
  logprobs: DevicePtr;
  topWidth: number;
}

const THREADS = 256;

/**
 * One depth of every growing tree: `depth` [4, numTrees] (counts, frontiers, keeps, rows), ids
 * mapped through `map` of `mapSize` ids (0: no map); every tree's nodes then become `sampled`.
 */
export function launchExpandDraftTrees(device: CudaDevice, table: DraftTreeTable, depth: DevicePtr, top: TopCandidates, map: DevicePtr, mapSize: number, sampled: DevicePtr): void {
  if (table.numTrees === 0) return;
  device.launch(device.kernel('draft-trees.cu', 'expand_draft_trees_kernel', 'piipppipip'), [table.numTrees], [THREADS], 0, [
    table.ptr,
    table.numTrees,
    table.size,
    depth,
    top.ids,
    top.logprobs,
    top.topWidth,
    map,
    mapSize,
    sampled,
  ]);
}

/** The step's draft-tree chunks' mask rows (`words` a row) from their trees' parents; `chunkTrees` [numSeqs]. */
export function launchDraftTreeMask(device: CudaDevice, mask: DevicePtr, words: number, queryStartLoc: DevicePtr, chunkTrees: DevicePtr, numSeqs: number, table: DraftTreeTable): void {
  if (numSeqs === 0) return;
  device.launch(device.kernel('draft-trees.cu', 'draft_tree_mask_kernel', 'pipppii'), [numSeqs], [THREADS], 0, [mask, words, queryStartLoc, chunkTrees, table.ptr, table.numTrees, table.size]);
}

/** out [numTokens]: each draft-tree chunk token's feature slot, picked from `slots` (numTokens + numSeqs) by its parent. */
export function launchDraftTreeSlots(device: CudaDevice, out: DevicePtr, slots: DevicePtr, queryStartLoc: DevicePtr, chunkTrees: DevicePtr, numSeqs: number, table: DraftTreeTable): void {
  if (numSeqs === 0) return;
  device.launch(device.kernel('draft-trees.cu', 'draft_tree_slots_kernel', 'pppppii'), [numSeqs], [THREADS], 0, [out, slots, queryStartLoc, chunkTrees, table.ptr, table.numTrees, table.size]);
}
