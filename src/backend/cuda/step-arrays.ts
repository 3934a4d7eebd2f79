import type { BatchDescription } from '../../step/batch.ts';
import type { AttentionPlan } from './attention-plan.ts';
import type { StepDeviceArrays } from './cuda-tensor.ts';
import type { LoraTiles } from './lora-tiles.ts';
import type { MlaExpansionPlan } from './mla-expansion-plan.ts';

/** Each array starts on a 64-byte boundary inside the packed upload. */
const ALIGN_INTS = 16;

/**
 * Concatenates a step's index arrays into one Int32Array so beginStep uploads them with a single
 * copy. `offsets` are element offsets of each array inside `data`.
 */
export function packStepArrays(
  batch: BatchDescription,
  plan: AttentionPlan,
  lora: LoraTiles | null,
  mlaExpansion: MlaExpansionPlan | null,
): { data: Int32Array; offsets: Record<keyof StepDeviceArrays, number> } {
  const parts: [keyof StepDeviceArrays, Int32Array][] = [
    ['tokenIds', batch.tokenIds],
    ['tokenSources', batch.tokenSources],
    ['positions', batch.positions],
    ['rotaryRows', batch.rotaryRows],
    ['slotMapping', batch.slotMapping],
    ['queryStartLoc', batch.queryStartLoc],
    ['seqLens', batch.seqLens],
    ['blockTables', batch.blockTables],
    ['logitsIndices', batch.logitsIndices],
    ['decodeSeqs', plan.decodeSeqs],
    ['decodeTokens', plan.decodeTokens],
    ['prefillTiles', plan.prefillTiles],
    ['wideTiles', plan.wideTiles],
    ['sparseDecodeSeqs', plan.sparse.decodeSeqs],
    ['sparseDecodeTokens', plan.sparse.decodeTokens],
    ['sparsePrefillTiles', plan.sparse.prefillTiles],
    ['sparseWideTiles', plan.sparse.wideTiles],
    ['loraOrder', lora?.order ?? new Int32Array(0)],
    ['loraTiles', lora?.tiles ?? new Int32Array(0)],
    ['treeMask', batch.treeMask ?? new Int32Array(0)],
    ['stateSlots', batch.stateSlots ?? new Int32Array(0)],
    ['mlaScratchBlocks', mlaExpansion?.blocks ?? new Int32Array(0)],
    ['mlaScratchTables', mlaExpansion?.tables ?? new Int32Array(0)],
    ['mlaWideTiles', mlaExpansion?.wideTiles ?? new Int32Array(0)],
    ['mlaAbsorbedTiles', mlaExpansion?.absorbedTiles ?? new Int32Array(0)],
  ];
  const offsets = {} as Record<keyof StepDeviceArrays, number>;
  let total = 0;
  for (const [name, array] of parts) {
    offsets[name] = total;
    total += Math.ceil(Math.max(array.length, 1) / ALIGN_INTS) * ALIGN_INTS;
  }
  const data = new Int32Array(total);
  for (const [name, array] of parts) data.set(array, offsets[name]);
  return { data, offsets };
}
