import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

/** out [numRows, cols] bf16 = src[indices[r], :]; cols a multiple of 8 (16-byte rows). */
export function launchGatherRows(device: CudaDevice, out: DevicePtr, src: DevicePtr, indices: DevicePtr, numRows: number, cols: number): void {
  if (numRows === 0) return;
  device.launch(device.kernel('rows.cu', 'gather_rows_kernel', 'pppi'), [numRows], [rowThreads(cols)], 0, [out, src, indices, cols / 8]);
}

/** out[indices[r], :] = src [numRows, cols] bf16 row r; cols a multiple of 8. */
export function launchScatterRows(device: CudaDevice, out: DevicePtr, src: DevicePtr, indices: DevicePtr, numRows: number, cols: number): void {
  if (numRows === 0) return;
  device.launch(device.kernel('rows.cu', 'scatter_rows_kernel', 'pppi'), [numRows], [rowThreads(cols)], 0, [out, src, indices, cols / 8]);
}

/** Where each sequence's slot after its last token is: its block table row and length on the device. */
export interface NextSlots {
  /** [numSeqs, maxBlocks] block ids. */
  tables: DevicePtr;
  /** [numSeqs] cache indices of the slots. */
  seqLens: DevicePtr;
  maxBlocks: number;
  blockSize: number;
}

/** out[slot after sequence s's last token, :] = src [numSeqs, cols] bf16 row s; cols a multiple of 8. */
export function launchScatterRowsAfter(device: CudaDevice, out: DevicePtr, src: DevicePtr, at: NextSlots, numSeqs: number, cols: number): void {
  if (numSeqs === 0) return;
  device.launch(device.kernel('rows.cu', 'scatter_rows_after_kernel', 'ppppiii'), [numSeqs], [rowThreads(cols)], 0, [out, src, at.tables, at.seqLens, at.maxBlocks, at.blockSize, cols / 8]);
}

/** Columns offset .. offset + cols of out [numRows, outCols] = src [numRows, cols], bf16: in 16-byte chunks where every width and the offset are multiples of 8, else element by element. */
export function launchCopyColumns(device: CudaDevice, out: DevicePtr, outCols: number, offset: number, src: DevicePtr, numRows: number, cols: number): void {
  if (numRows === 0) return;
  if (outCols % 8 === 0 && offset % 8 === 0 && cols % 8 === 0) {
    device.launch(device.kernel('rows.cu', 'copy_columns_kernel', 'ppiii'), [numRows], [rowThreads(cols)], 0, [out, src, outCols / 8, offset / 8, cols / 8]);
  } else {
    device.launch(device.kernel('rows.cu', 'copy_columns_elements_kernel', 'ppiii'), [numRows], [Math.min(256, 32 * Math.ceil(cols / 32))], 0, [out, src, outCols, offset, cols]);
  }
}

export interface EmbedTokensArgs {
  out: DevicePtr;
  table: DevicePtr;
  /** The vocabulary id of the table's first row (a vocab-parallel shard's), and its rows. */
  firstRow: number;
  vocab: number;
  /** bf16 row width, a multiple of 8. */
  cols: number;
  tokens: DevicePtr;
  /** Per row: -1, or the index into `sampled` of the row's token. */
  sources: DevicePtr;
  sampled: DevicePtr;
  numRows: number;
  /** Multiplies every value (Gemma scales embeddings by √hidden); 1 copies the rows as they are. */
  scale: number;
}

/** out [numRows, cols] = table rows of each token id times `scale`, ids named by `sources` read from `sampled`. */
export function launchEmbedTokens(device: CudaDevice, a: EmbedTokensArgs): void {
  if (a.numRows === 0) return;
  device.launch(device.kernel('rows.cu', 'embed_tokens_kernel', 'pppppiiif'), [a.numRows], [rowThreads(a.cols)], 0, [
    a.out,
    a.table,
    a.tokens,
    a.sources,
    a.sampled,
    a.firstRow,
    a.vocab,
    a.cols / 8,
    a.scale,
  ]);
}

/** out [rows, blocks · cols] bf16 from in [blocks, rows, cols]: block b's rows at columns b · cols; cols a multiple of 8. */
export function launchColumnBlocks(device: CudaDevice, out: DevicePtr, input: DevicePtr, rows: number, cols: number, blocks: number): void {
  if (rows === 0) return;
  device.launch(device.kernel('rows.cu', 'column_blocks_kernel', 'ppiii'), [rows, blocks], [rowThreads(cols)], 0, [out, input, rows, cols / 8, blocks]);
}

/** ids[i] = map[ids[i]] in place for the `n` ids, where ids[i] >= 0 (int32 buffers; ids past the map become -1). */
export function launchMapIds(device: CudaDevice, ids: DevicePtr, map: DevicePtr, n: number, mapSize: number): void {
  if (n === 0) return;
  device.launch(device.kernel('rows.cu', 'map_ids_kernel', 'ppii'), [Math.ceil(n / 256)], [256], 0, [ids, map, n, mapSize]);
}

function rowThreads(cols: number): number {
  return Math.min(256, Math.ceil(cols / 8 / 32) * 32);
}
