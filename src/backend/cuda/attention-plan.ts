import type { BatchDescription } from '../../step/batch.ts';

/** Query rows per prefill CTA; must match BM in kernels/prefill-attention.cu. */
export const PREFILL_TILE_ROWS = 64;
/** Query rows per CTA of the Hopper prefill kernel; must match BM in kernels/prefill-attention-wgmma.cu. */
export const WIDE_PREFILL_TILE_ROWS = 128;
/** Keys per decode tile; must match TK in kernels/decode-attention.cu. */
export const DECODE_TILE_KEYS = 32;
/**
 * Keys a decode partition is sized for (decodeSplit: ceil(keys / this) partitions): below about
 * this the merge costs more than it saves. Measured on the H100 (8B, batch 1, whole decode step):
 * 64 beats 128 by 0.13 ms at 200 keys and ties at 2,000; 32 loses at 2,000.
 */
export const MIN_KEYS_PER_PARTITION = 64;
/**
 * Longest verification chain whose tokens dense layers run as decodes (AttentionPlan.chainsAsDecodes):
 * each token reads the context once more, which a prefill tile of up to 64 rows would read once,
 * so past a few tokens the tiles win back what the decode kernel's split over the context gains.
 */
export const MAX_CHAIN_DECODES = 8;
/**
 * Decode CTAs to aim for per multiprocessor: enough loads in flight to saturate HBM. Two, not four
 * (H100, session 32, `keel bench attention --only decode`): batch 1 at 8k keys 16.1 µs against 23.1
 * on the tensor cores, at 32k 55.2 against 60.5; 16 decodes at 32k over fp8 / int8 / int4 caches
 * 401 / 425 / 357 µs against 443 / 466 / 374; no shape timed slower beyond noise. Fewer, longer
 * partitions each stream more keys behind one Q load and write fewer partials to merge.
 */
const DECODE_CTAS_PER_SM = 2;

/**
 * How one step's query tokens split between the two attention kernels: decodes (each with its
 * sequence and its flattened token index) go to the split-KV decode kernel, chunks to the tiled
 * prefill kernel.
 */
export interface AttentionSplit {
  /** The decodes' sequence indices. */
  decodeSeqs: Int32Array;
  /** The decodes' flattened token indices, one per entry of decodeSeqs. */
  decodeTokens: Int32Array;
  /** [numTiles, 2]: (sequence, first query row of the tile within the sequence's chunk). */
  prefillTiles: Int32Array;
  /** The same chunks cut into WIDE_PREFILL_TILE_ROWS-row tiles (the Hopper prefill kernel's), likewise longest first. */
  wideTiles: Int32Array;
}

/**
 * The step's split for dense layers: single-token sequences (decodes, or a one-token final chunk)
 * are the decodes, longer chunks prefill. `sparse` is the split for Quest's sparse layers: there
 * every token of a verification chunk (BatchDescription.verificationChunks, a chain or a tree) is
 * a decode too, at its own position, as the decode it stands for would run.
 */
export interface AttentionPlan extends AttentionSplit {
  /** Longest seqLen among the dense split's decodes (0 when there are none). */
  maxDecodeSeqLen: number;
  sparse: AttentionSplit;
  /**
   * Whether dense layers take `sparse`'s split too: the step verifies chains (no tree mask) of at
   * most MAX_CHAIN_DECODES tokens each. A prefill tile gives one CTA per head to a few rows over the
   * whole context; as decodes, each token's keys (up to its position) are split over the context
   * and shared by its kv head's query heads, as a plain decode step's are.
   */
  chainsAsDecodes: boolean;
}

export function planAttention(batch: BatchDescription): AttentionPlan {
  const dense = new SplitBuilder();
  const sparse = new SplitBuilder();
  let maxDecodeSeqLen = 0;
  let shortChains = batch.verificationChunks !== null && batch.treeMask === null;
  for (let s = 0; s < batch.numSeqs; s++) {
    const start = batch.queryStartLoc[s];
    const len = batch.queryStartLoc[s + 1] - start;
    if (len === 1) {
      dense.decode(s, start);
      sparse.decode(s, start);
      maxDecodeSeqLen = Math.max(maxDecodeSeqLen, batch.seqLens[s]);
      continue;
    }
    dense.chunk(batch, s);
    if (batch.verificationChunks?.[s] === 1) {
      for (let t = start; t < start + len; t++) sparse.decode(s, t);
      if (len > MAX_CHAIN_DECODES) shortChains = false;
    } else sparse.chunk(batch, s);
  }
  return { ...dense.split(), maxDecodeSeqLen, sparse: sparse.split(), chainsAsDecodes: shortChains };
}

class SplitBuilder {
  private readonly seqs: number[] = [];
  private readonly tokens: number[] = [];
  private readonly tiles: PrefillTile[] = [];
  private readonly wide: PrefillTile[] = [];

  decode(seq: number, token: number): void {
    this.seqs.push(seq);
    this.tokens.push(token);
  }

  chunk(batch: BatchDescription, seq: number): void {
    cutTiles(batch, seq, PREFILL_TILE_ROWS, this.tiles);
    cutTiles(batch, seq, WIDE_PREFILL_TILE_ROWS, this.wide);
  }

  split(): AttentionSplit {
    return { decodeSeqs: Int32Array.from(this.seqs), decodeTokens: Int32Array.from(this.tokens), prefillTiles: tileList(this.tiles), wideTiles: tileList(this.wide) };
  }
}

interface PrefillTile {
  seq: number;
  row: number;
  lastPosition: number;
}

/** Appends sequence `seq`'s chunk cut into `rows`-row tiles. */
function cutTiles(batch: BatchDescription, seq: number, rows: number, into: PrefillTile[]): void {
  const start = batch.queryStartLoc[seq];
  const len = batch.queryStartLoc[seq + 1] - start;
  for (let row = 0; row < len; row += rows) {
    into.push({ seq, row, lastPosition: batch.positions[start + Math.min(row + rows, len) - 1] });
  }
}

/** [numTiles, 2] (sequence, first row), the longest-running tiles (most keys) first so that the short ones fill in the tail of the grid. */
function tileList(tiles: PrefillTile[]): Int32Array {
  tiles.sort((a, b) => b.lastPosition - a.lastPosition);
  return Int32Array.from(tiles.flatMap((t) => [t.seq, t.row]));
}

export interface DecodePartitions {
  numPartitions: number;
  /** Keys per partition, a multiple of DECODE_TILE_KEYS. */
  partitionSize: number;
}

/**
 * How one decode splits `visible` keys over at most `numPartitions` partitions: ceil(keys / minKeys)
 * of them, sizes in whole tiles of `tileKeys` (every partition but the last holds more than
 * minKeys / 2). The host twin of the kernels' decode_split (decode-split.cuh, which says why it
 * rounds up; test/backend/cuda/decode-split.test.ts compares them).
 */
export function decodeSplit(visible: number, numPartitions: number, minKeys: number, tileKeys: number): DecodePartitions {
  const keys = Math.max(0, visible);
  const wanted = Math.max(1, Math.min(Math.ceil(keys / minKeys), numPartitions));
  const per = Math.ceil(keys / wanted);
  const partitionSize = per <= tileKeys ? tileKeys : Math.ceil(per / tileKeys) * tileKeys;
  return { numPartitions: Math.max(1, Math.ceil(keys / partitionSize)), partitionSize };
}

/**
 * Flash-Decoding partitions of a launch: enough that numDecode × numKvHeads × partitions CTAs keep
 * every multiprocessor busy, as many as its longest decode's split uses (decodeSplit, partitions of
 * about MIN_KEYS_PER_PARTITION keys). `maxVisibleKeys` is the longest visible span the launch
 * provides for (what the block tables hold, or the sliding window when smaller); each decode then
 * splits its own keys the same way within these partitions, and its CTAs past them return at once.
 */
export function chooseDecodePartitions(numDecode: number, numKvHeads: number, maxVisibleKeys: number, multiprocessors: number): number {
  const wanted = Math.ceil((DECODE_CTAS_PER_SM * multiprocessors) / Math.max(1, numDecode * numKvHeads));
  return decodeSplit(maxVisibleKeys, wanted, MIN_KEYS_PER_PARTITION, DECODE_TILE_KEYS).numPartitions;
}

/**
 * Keys an MLA decode partition is sized for (decodeSplit) when its CTA holds `headsPerCta` heads of
 * a token: four rows of the latent cache a head of the query tile (whose load, with the pipeline's
 * fill, a partition pays before keys stream), and at least 64. On the H100 (session 32, `keel bench
 * attention`) 64 against 256 took a 16-head decode at 4k keys from 19.5 to 16.0 µs, and a CTA of 64
 * heads (DeepSeek-V3's 128 in two) from 30.2 to 31.8: the query tile's cost grows with its heads.
 */
export function mlaMinKeysPerPartition(headsPerCta: number): number {
  return Math.max(64, 4 * headsPerCta);
}

/**
 * Flash-Decoding split for MLA decode: `ctas` CTAs per partition (decodes × head blocks) of
 * `headsPerCta` heads each. An MLA CTA holds up to ~226 KB of shared memory, one per
 * multiprocessor, so the split aims at a single wave: as many partitions as leave every
 * multiprocessor one CTA, of about mlaMinKeysPerPartition keys — the longest decode's decodeSplit
 * in whole tiles of the kernel's `tileKeys` (mla-decode.cu splits each decode's own keys the same
 * way; mla.cu takes the size).
 */
export function chooseMlaPartitions(ctas: number, headsPerCta: number, maxVisibleKeys: number, tileKeys: number, multiprocessors: number): DecodePartitions {
  return decodeSplit(maxVisibleKeys, Math.max(1, Math.floor(multiprocessors / Math.max(1, ctas))), mlaMinKeysPerPartition(headsPerCta), tileKeys);
}
