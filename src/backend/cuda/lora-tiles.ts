/** Tokens per LoRA tile: the M of the kernels' mma.sync m16n8k16; must match TILE in kernels/lora.cu. */
export const LORA_TILE_TOKENS = 16;

/**
 * A step's tokens grouped by LoRA adapter for the segmented kernels (kernels/lora.cu), computed
 * once per step on the host and uploaded with the step's arrays: the adapted tokens sorted by slot
 * (stable, so a sequence's tokens stay in order), and the tiles of at most LORA_TILE_TOKENS sorted
 * positions of one slot that the kernels' blocks take. Base-model tokens (slot -1) are in no tile.
 */
export interface LoraTiles {
  /** [numTokens]: the adapted tokens' indices, by slot; the entries past the last one are unused. */
  order: Int32Array;
  /** [1 + 3 · numTokens]: the number of tiles, then (slot, first sorted position, tokens) per tile. */
  tiles: Int32Array;
}

/** Sizes depend on the token count alone, so a decode step's arrays keep their offsets (CUDA graphs). */
export function planLoraTiles(slots: Int32Array): LoraTiles {
  const numTokens = slots.length;
  let maxSlot = -1;
  for (const slot of slots) maxSlot = Math.max(maxSlot, slot);
  // Counting sort: segment starts by slot, then each token at its segment's next position.
  const starts = new Int32Array(maxSlot + 2);
  for (const slot of slots) if (slot >= 0) starts[slot + 1]++;
  for (let s = 0; s <= maxSlot; s++) starts[s + 1] += starts[s];
  const next = starts.slice(0, maxSlot + 1);
  const order = new Int32Array(numTokens);
  slots.forEach((slot, t) => {
    if (slot >= 0) order[next[slot]++] = t;
  });
  const tiles = new Int32Array(1 + 3 * numTokens);
  let numTiles = 0;
  for (let slot = 0; slot <= maxSlot; slot++) {
    for (let p = starts[slot]; p < starts[slot + 1]; p += LORA_TILE_TOKENS) {
      tiles.set([slot, p, Math.min(LORA_TILE_TOKENS, starts[slot + 1] - p)], 1 + 3 * numTiles++);
    }
  }
  tiles[0] = numTiles;
  return { order, tiles };
}

/**
 * The most tiles a step of `numTokens` tokens over at most `slots` adapters can have: each
 * adapter's last tile may be partial. Grids are sized by this (a function of the shape alone) and
 * their blocks past the step's real tiles exit.
 */
export function loraTileCapacity(numTokens: number, slots: number): number {
  return Math.min(numTokens, Math.ceil(numTokens / LORA_TILE_TOKENS) + Math.min(slots, numTokens) - 1);
}
