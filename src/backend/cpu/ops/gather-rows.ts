/**
 * out[i] = table[indices[i]] for rows of width `cols`: the embedding lookup (indices = token ids)
 * and the logits-row gather are this one op.
 */
export function gatherRows(table: Float32Array, cols: number, indices: Int32Array, out: Float32Array): void {
  const tableRows = table.length / cols;
  for (let i = 0; i < indices.length; i++) {
    const row = indices[i];
    if (!(row >= 0 && row < tableRows)) throw new RangeError(`gatherRows: row ${row} is outside [0, ${tableRows})`);
    out.set(table.subarray(row * cols, (row + 1) * cols), i * cols);
  }
}
