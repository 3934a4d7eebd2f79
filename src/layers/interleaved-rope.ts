import { invalidArgument, invalidModel } from '../errors.ts';
import type { LoraAdapter } from '../tensor/lora-adapter.ts';
import { isQuantized, selectQuantizedRows } from '../tensor/quantized-weight.ts';
import { isSparse24 } from '../tensor/sparse24.ts';
import type { LoraTarget, WeightSource } from './parameters.ts';
import { selectedRows, selectRows } from './row-selection.ts';

/*
 * Checkpoints whose rotary dims pair as (x[2i], x[2i+1]) (DeepSeek's MLA, GLM-5's indexer, the
 * attention of ERNIE 4.5, GLM-4 and Llama 4) are loaded with the rows that produce those dims
 * permuted into rotate_half order (pair i with i + rope/2), so the backends' one rotation serves
 * them. A score only ever dots a query's rotary part with a key's, and a permutation applied to
 * both leaves the dot product unchanged (and a per-head norm's output, its weight permuted alike).
 */

/** Row k of a rotary block in rotate_half order is this row of the interleaved checkpoint's block of `ropeDim`. */
export function interleavedRow(k: number, ropeDim: number): number {
  const half = ropeDim / 2;
  return k < half ? 2 * k : 2 * (k - half) + 1;
}

/**
 * `source` with the rows of the tensors named in `rowsOf` permuted: row r of the result is row
 * `rowsOf[name](r)` of the checkpoint's. 16-bit tensors through `read`; a linear weight also in
 * the format `readLinear` gives it (a quantized checkpoint's, or `--quantization`'s), whose rows
 * are independent in every layout but AQLM's (codes, scales, zeros and mins by output row), so
 * moving whole rows is exact. AQLM weights (codebooks by row ranges) and 2:4 sparse ones cannot
 * move: refused, naming the tensor. The other tensors read as the source reads them.
 */
export function withPermutedRows(source: WeightSource, rowsOf: Record<string, (row: number) => number>): WeightSource {
  const out: WeightSource = {
    ...selectedRows(source, Object.fromEntries(Object.entries(rowsOf).map(([name, row]) => [name, { row }]))),
    ...(source.readOptional === undefined ? {} : { readOptional: source.readOptional.bind(source) }),
  };
  const readLinear = source.readLinear?.bind(source);
  if (readLinear !== undefined) {
    out.readLinear = (name) => {
      const w = readLinear(name);
      const row = rowsOf[name];
      if (row === undefined) return w;
      const cannot = (what: string) => `${name}: its rows move at load (interleaved RoPE pairs into rotate_half order), which ${what}`;
      if (isSparse24(w)) throw invalidArgument(cannot('2:4 sparse weights cannot take; leave --sparsity out'));
      if (!isQuantized(w)) return selectRows(w, { row });
      if (w.codebooks !== null) throw invalidModel(cannot(`${w.format} weights (codebooks by row ranges) cannot take`));
      return selectQuantizedRows(w, Int32Array.from({ length: w.rows }, (_, r) => row(r)));
    };
  }
  return out;
}

/**
 * `target` as LoRA drives it, with an adapter's B rows of the tensors named in `rowsOf` permuted as
 * their weights' rows are at load, so that B · A adds to the rows it adapts in the checkpoint.
 */
export function withPermutedLoraRows(target: LoraTarget, rowsOf: Record<string, (row: number) => number>): LoraTarget {
  const permuted = (adapter: LoraAdapter): LoraAdapter => ({
    ...adapter,
    modules: new Map(
      [...adapter.modules].map(([module, weights]) => {
        const row = rowsOf[`${module}.weight`];
        if (row === undefined) return [module, weights];
        return [module, { ...weights, b: selectRows(weights.b, { row }) }];
      }),
    ),
  });
  return {
    loraModules: target.loraModules,
    parts: target.parts,
    inFeatures: target.inFeatures,
    enableLora: (b, slots, maxRank) => target.enableLora(b, slots, maxRank),
    checkLoraAdapter: (adapter, what) => target.checkLoraAdapter(adapter, what),
    setLoraSlot: (b, slot, adapter) => target.setLoraSlot(b, slot, permuted(adapter)),
  };
}
