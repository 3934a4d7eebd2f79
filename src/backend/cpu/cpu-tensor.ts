import type { KvCache, SwapSpace, Tensor } from '../backend.ts';
import type { LayerStateSlots } from './ops/state-slots.ts';
import { indexKeyElementsPerToken, kvElementsPerToken, kvLayerDtype, kvStorage, layoutIndex, type KvCacheLayout, type LayerKvSpec } from '../../step/kv-cache-layout.ts';
import type { Mxfp4Weight } from '../../tensor/mxfp4.ts';
import type { QuantizedWeight } from '../../tensor/quantized-weight.ts';
import { createKvPool, type CpuKvPool, type KvPoolArray } from './ops/kv-codes.ts';

/** The CPU backend's tensor: row-major float32 values in `data`, exactly `shape`'s element count. */
export class CpuTensor implements Tensor {
  readonly shape: readonly number[];
  readonly data: Float32Array;

  constructor(shape: readonly number[], data: Float32Array) {
    if (data.length !== elementCount(shape)) {
      throw new Error(`CpuTensor: ${data.length} values do not fill shape [${shape.join(', ')}]`);
    }
    this.shape = shape;
    this.data = data;
  }

  static zeros(shape: readonly number[]): CpuTensor {
    return new CpuTensor(shape, new Float32Array(elementCount(shape)));
  }

  /** Rows and columns of a 2-D tensor. */
  get rows(): number {
    return this.shape[0];
  }

  get cols(): number {
    return this.shape[1];
  }
}

/** A linear weight kept in its quantized layout, [rows, cols]. */
export class CpuQuantizedTensor implements Tensor {
  readonly shape: readonly number[];
  readonly weight: QuantizedWeight;

  constructor(weight: QuantizedWeight) {
    this.shape = [weight.rows, weight.cols];
    this.weight = weight;
  }
}

/**
 * A 2:4 sparse linear weight [rows, cols] kept compressed (src/tensor/sparse24.ts): its kept
 * values [rows, cols / 2] in float32 and their column metadata [rows, cols / 8].
 */
export class CpuSparse24Tensor implements Tensor {
  readonly shape: readonly number[];
  readonly values: Float32Array;
  readonly meta: Uint8Array;

  constructor(rows: number, cols: number, values: Float32Array, meta: Uint8Array) {
    if (values.length !== (rows * cols) / 2 || meta.length !== (rows * cols) / 8) {
      throw new Error(`CpuSparse24Tensor: ${values.length} values and ${meta.length} metadata bytes do not fit a 2:4 weight [${rows}, ${cols}]`);
    }
    this.shape = [rows, cols];
    this.values = values;
    this.meta = meta;
  }
}

/** MoE experts [count, rows, cols] kept packed in MXFP4; expertMlp decodes one expert's matrix at a time. */
export class CpuMxfp4Tensor implements Tensor {
  readonly shape: readonly number[];
  readonly weight: Mxfp4Weight;

  constructor(weight: Mxfp4Weight) {
    this.shape = [...weight.shape];
    this.weight = weight;
  }
}

/** Routed MoE experts [count, rows, cols] in a quantized layout, stacked along the weight's rows; expertMlp decodes one expert's matrix at a time. */
export class CpuQuantizedExperts implements Tensor {
  readonly shape: readonly number[];
  readonly weight: QuantizedWeight;

  constructor(weight: QuantizedWeight, count: number) {
    this.shape = [count, weight.rows / count, weight.cols];
    this.weight = weight;
  }
}

/** Rotary tables as uploaded: `cos`/`sin` are [maxPositions, rotaryDim / 2]. */
export class CpuRopeTable implements Tensor {
  readonly shape: readonly number[];
  readonly rotaryDim: number;
  readonly cos: Float32Array;
  readonly sin: Float32Array;

  constructor(rotaryDim: number, cos: Float32Array, sin: Float32Array) {
    this.shape = [cos.length / (rotaryDim / 2), rotaryDim / 2];
    this.rotaryDim = rotaryDim;
    this.cos = cos;
    this.sin = sin;
  }

  get maxPositions(): number {
    return this.shape[0];
  }
}

/**
 * The paged pools of each storage of the layout (`kvStorage`: a layer's own, or one shared with
 * layers of other KV groups), in its dtype (ops/kv-codes.ts, `kvLayerDtype`): attention has a key
 * pool and a value pool, each [numBlocks, blockSize, numKvHeads, headDim]; MLA one pool of rows
 * [numBlocks, blockSize, latentDim + ropeDim], a rows layer one of [numBlocks, blockSize, width],
 * always float32.
 */
export class CpuKvCache implements KvCache {
  readonly layout: KvCacheLayout;
  readonly pools: CpuKvPool[][];
  /** Per layer of the layout, a state layer's slots ([stateSlots, conv + recurrent] float32), else null. */
  readonly states: (Float32Array | null)[];
  private readonly poolOf: number[];

  constructor(layout: KvCacheLayout) {
    this.layout = layout;
    const slots = layout.numBlocks * layout.blockSize;
    const dtype = layout.dtype ?? 'auto';
    const storage = kvStorage(layout.layers, layout.groups);
    this.poolOf = storage.poolOf;
    const stateSlots = layout.stateSlots ?? 0;
    this.states = layout.layers.map((spec) => (spec.kind === 'state' ? new Float32Array(stateSlots * (spec.convElements + spec.recurrentElements)) : null));
    // An attention storage with key summaries has a third pool, indexed by block: [numBlocks,
    // numKvHeads, 2 * headDim] float32 (ops/key-summaries.ts). A sparse MLA storage has a second
    // pool, its indexer keys [slots, keyDim], in the dtype of its rows, 8-bit keys with a scale each (IndexKeysSpec).
    this.pools = storage.pools.map((spec) =>
      spec.kind === 'attention'
        ? [
            createKvPool(dtype, slots, spec.numKvHeads, spec.headDim),
            createKvPool(dtype, slots, spec.numKvHeads, spec.headDim),
            ...(spec.keySummaries === true ? [createKvPool('auto', layout.numBlocks, spec.numKvHeads, 2 * spec.headDim)] : []),
          ]
        : [
            createKvPool(kvLayerDtype(spec, dtype), slots, 1, kvElementsPerToken(spec)),
            ...(indexKeyElementsPerToken(spec) > 0 ? [createKvPool(kvLayerDtype(spec, dtype), slots, 1, indexKeyElementsPerToken(spec), true)] : []),
          ],
    );
  }

  /** The pools model layer `layer` reads and writes. */
  layerPools(layer: number): CpuKvPool[] {
    return this.pools[this.poolOf[layoutIndex(this.layout, layer)]];
  }

  /** Model layer `layer`'s state slots, for the state ops (`SequenceStateSpec`). */
  layerState(layer: number, op: string): LayerStateSlots {
    const spec = this.spec(layer);
    const state = this.states[layoutIndex(this.layout, layer)];
    if (spec.kind !== 'state' || state === null) throw new Error(`${op}: layer ${layer} keeps ${spec.kind} entries, not a per-sequence state`);
    return { state, convElements: spec.convElements, recurrentElements: spec.recurrentElements };
  }

  spec(layer: number): LayerKvSpec {
    return this.layout.layers[layoutIndex(this.layout, layer)];
  }
}

/**
 * Host blocks a CpuKvCache's blocks are copied out to: each block's slice of every pool array (an
 * int8 pool's scales included, ops/kv-codes.ts `poolArrays`), made on its first copy and kept until
 * overwritten (the CPU backend's memory is host memory already).
 */
export class CpuSwapSpace implements SwapSpace {
  readonly layout: KvCacheLayout;
  readonly blocks = new Map<number, KvPoolArray[]>();

  constructor(layout: KvCacheLayout) {
    this.layout = layout;
  }
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

// A tensor from another backend reaching CPU ops is a wiring bug, not a user error.
export function asCpuTensor(t: Tensor, what: string): CpuTensor {
  if (t instanceof CpuQuantizedTensor) throw new Error(`CpuBackend: ${what} is a quantized weight (${t.weight.format}), which only linear and gatedLinear multiply by`);
  if (t instanceof CpuMxfp4Tensor) throw new Error(`CpuBackend: ${what} is an MXFP4 weight, which only expertMlp multiplies by`);
  if (t instanceof CpuQuantizedExperts) throw new Error(`CpuBackend: ${what} are quantized experts (${t.weight.format}), which only expertMlp multiplies by`);
  if (t instanceof CpuSparse24Tensor) throw new Error(`CpuBackend: ${what} is a 2:4 sparse weight, which only linear and gatedLinear multiply by`);
  if (!(t instanceof CpuTensor)) throw new Error(`CpuBackend: ${what} is not a CPU tensor`);
  return t;
}

export function asCpuRopeTable(t: Tensor): CpuRopeTable {
  if (!(t instanceof CpuRopeTable)) throw new Error('CpuBackend: rope is not a table from uploadRopeTable');
  return t;
}

export function asCpuSwapSpace(s: SwapSpace): CpuSwapSpace {
  if (!(s instanceof CpuSwapSpace)) throw new Error('CpuBackend: swap space is not from createSwapSpace');
  return s;
}

export function asCpuKvCache(c: KvCache): CpuKvCache {
  if (!(c instanceof CpuKvCache)) throw new Error('CpuBackend: cache is not from createKvCache');
  return c;
}
