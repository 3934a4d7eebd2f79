import { invalidArgument, invalidModel } from '../errors.ts';
import { gatherElements } from '../tensor/host-ops.ts';
import type { LoraAdapter } from '../tensor/lora-adapter.ts';
import { isQuantized, selectQuantizedRows, type LinearWeight } from '../tensor/quantized-weight.ts';
import { isSparse24 } from '../tensor/sparse24.ts';
import type { LoraTarget, WeightSource } from './parameters.ts';
import { selectedRows, selectRows, transformedTensors } from './row-selection.ts';

/*
 * Checkpoints whose rotary dims pair as (x[2i], x[2i+1]) (DeepSeek's MLA, GLM-5's indexer, the
 * attention of ERNIE 4.5, Cohere, GLM-4 and Llama 4) are loaded with the rows that produce those
 * dims permuted into rotate_half order (pair i with i + rope/2), so the backends' one rotation
 * serves them. A score only ever dots a query's rotary part with a key's, and a permutation
 * applied to both leaves the dot product unchanged (and a norm's output, its weight permuted alike).
 */

/** Row k of a rotary block in rotate_half order is this row of the interleaved checkpoint's block of `ropeDim`. */
export function interleavedRow(k: number, ropeDim: number): number {
  const half = ropeDim / 2;
  return k < half ? 2 * k : 2 * (k - half) + 1;
}

/**
 * Row k of a rotary block in rotate_half order is this row of a checkpoint that rotates by −θ
 * (NanoChat's rotate_half, (x2, −x1)): its halves swapped, which the backends' +θ rotation turns
 * into the checkpoint's outputs with their halves swapped, alike in q and k.
 */
export function swappedHalvesRow(k: number, ropeDim: number): number {
  const half = ropeDim / 2;
  return k < half ? k + half : k - half;
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
  const permuted = selectedRows(source, Object.fromEntries(Object.entries(rowsOf).map(([name, row]) => [name, { row }])));
  return withSourceReaders(source, permuted, (name, w) => {
    const row = rowsOf[name];
    if (row === undefined) return null;
    const cannot = (what: string) => `${name}: its rows move at load (interleaved RoPE pairs into rotate_half order), which ${what}`;
    if (isSparse24(w)) throw invalidArgument(cannot('2:4 sparse weights cannot take; leave --sparsity out'));
    if (!isQuantized(w)) return selectRows(w, { row });
    if (w.codebooks !== null) throw invalidModel(cannot(`${w.format} weights (codebooks by row ranges) cannot take`));
    return selectQuantizedRows(w, Int32Array.from({ length: w.rows }, (_, r) => row(r)));
  });
}

/**
 * `source` with the elements of the tensors named in `elementsOf` permuted, counted over the whole
 * tensor in row-major order: element i of the result is element `elementsOf[name](i)` of the
 * checkpoint's (a norm weight [heads, headDim] of the heads whose rows are permuted). The other
 * tensors read as the source reads them.
 */
export function withPermutedElements(source: WeightSource, elementsOf: Record<string, (element: number) => number>): WeightSource {
  const permuted = transformedTensors(source, (name) => {
    const element = elementsOf[name];
    if (element === undefined) return null;
    return (t) => ({ ...gatherElements(t, [t.shape.reduce((n, d) => n * d, 1)], element), shape: t.shape });
  });
  // Norm weights, which no layer reads as a linear weight: such a read gets their permuted 16-bit values.
  return withSourceReaders(source, permuted, (name) => (elementsOf[name] === undefined ? null : permuted.read(name)));
}

/**
 * `permuted` (reading some of `source`'s tensors in another order) with `source`'s other readers:
 * its optional tensors (an fp8 KV cache's scales) as they are, and its linear weights as
 * `moved(name, weight)` gives them, or as stored where that is null.
 */
function withSourceReaders(source: WeightSource, permuted: WeightSource, moved: (name: string, w: LinearWeight) => LinearWeight | null): WeightSource {
  const readLinear = source.readLinear?.bind(source);
  return {
    ...permuted,
    ...(source.readOptional === undefined ? {} : { readOptional: source.readOptional.bind(source) }),
    ...(readLinear === undefined
      ? {}
      : {
          readLinear: (name: string) => {
            const w = readLinear(name);
            return moved(name, w) ?? w;
          },
        }),
  };
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
