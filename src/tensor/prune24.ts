/*
 * 2:4 pruning of a linear weight W [rows, cols] (a layer's [out, in]): in every group of 4
 * consecutive input columns of each row, the 2 weights of lowest importance become 0.
 *
 *   magnitude  importance |W[r, c]|
 *   wanda      importance |W[r, c]| · ‖X[:, c]‖₂ (Wanda, Sun et al. 2023): a weight matters as much
 *              as the inputs it multiplies are large, ‖X[:, c]‖₂ taken over every calibration
 *              token's input row of the layer
 *
 * Both compare weights within a group of one output row, the comparison group 2:4 imposes.
 */

export type PruneMethod = 'magnitude' | 'wanda';
export const PRUNE_METHODS: readonly PruneMethod[] = ['magnitude', 'wanda'];

/**
 * W with the 2 lowest-importance weights of each group of 4 set to 0 (a new array): `inputNorms`
 * [cols] weighs each column (wanda), or null for magnitude alone. Of equal importances the
 * lower column is pruned first.
 */
export function prune24(w: Float32Array, rows: number, cols: number, inputNorms: Float64Array | null): Float32Array {
  if (cols % 4 !== 0) throw new Error(`prune24: ${cols} columns do not split into groups of 4`);
  if (w.length !== rows * cols) throw new Error(`prune24: ${w.length} values do not fill [${rows}, ${cols}]`);
  if (inputNorms !== null && inputNorms.length !== cols) throw new Error(`prune24: ${inputNorms.length} input norms for ${cols} columns`);
  const out = Float32Array.from(w);
  const order = [0, 1, 2, 3];
  const score = new Float64Array(4);
  for (let at = 0; at < w.length; at += 4) {
    const col = at % cols;
    for (let i = 0; i < 4; i++) score[i] = Math.abs(w[at + i]) * (inputNorms === null ? 1 : inputNorms[col + i]);
    order.sort((a, b) => score[a] - score[b] || a - b);
    out[at + order[0]] = 0;
    out[at + order[1]] = 0;
  }
  return out;
}

/** ‖X[:, c]‖₂ of each input column, from the calibration Gram matrix XᵀX [cols, cols] (its diagonal). */
export function inputNormsFromGram(gram: Float64Array, cols: number): Float64Array {
  return Float64Array.from({ length: cols }, (_, c) => Math.sqrt(gram[c * cols + c]));
}
