import type { Backend, DeltaRuleParams, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import type { SequenceStateSpec } from '../step/kv-cache-layout.ts';
import { Linear, type RowRange } from './linear.ts';
import { loaded, loadLayers, parametersOf, type Layer, type ParameterSpec, type TensorParallelShard, type WeightSource, type WeightUploader } from './parameters.ts';
import { selectedRows, type RowSelection } from './row-selection.ts';
import { evenPart, readRowRanges, readSlice, shardOf } from './shard.ts';

/**
 * How the checkpoint stores the input projections. `grouped` (Qwen3-Next): `in_proj_qkvz`, per key
 * head its query, key, then its value heads' values and gates, and `in_proj_ba`, per key head its
 * value heads' b then a. `separate` (Qwen3.5): `in_proj_qkv` (all queries, keys, values), `in_proj_z`,
 * `in_proj_b`, `in_proj_a`.
 */
export type DeltaNetProjections = 'grouped' | 'separate';

export interface GatedDeltaNetOptions extends Omit<DeltaRuleParams, 'decay'> {
  /** This layer's index in the KV cache layout. */
  layer: number;
  /** Checkpoint prefix of the layer's tensors (`model.layers.<i>.linear_attn`). */
  prefix: string;
  hiddenSize: number;
  /** Width of the causal convolution over the queries, keys and values (`linear_conv_kernel_dim`). */
  convKernel: number;
  /** The output norm's epsilon. */
  eps: number;
  projections: DeltaNetProjections;
}

/**
 * A Gated DeltaNet layer (linear attention; transformers' Qwen3NextGatedDeltaNet): input
 * projections to queries, keys, values (through a short causal convolution and silu), output gates
 * z and the b / a that give each value head's write strength β and decay g; the gated delta rule
 * over a recurrent state per sequence; a gated RMSNorm per value head; the output projection. It
 * keeps no per-token cache: its KV spec is a per-sequence state (`SequenceStateSpec`).
 *
 * At load its projections are put in one order whatever the checkpoint's: `qkv` [all queries, all
 * keys, all values] (the convolution's channel order in both checkpoints), `z` [values' gates],
 * `ba` [every head's b, then every head's a].
 *
 * Tensor parallel: each device holds an equal part of the key heads and their groups of value
 * heads (their rows of every input projection, convolution channels, decays and state), and the
 * output projection's matching input columns, summed by an all-reduce as attention's is.
 */
export class GatedDeltaNet implements Layer {
  readonly layer: number;
  private readonly options: GatedDeltaNetOptions;
  private readonly qkv: Linear;
  private readonly z: Linear;
  private readonly ba: Linear;
  private readonly out: Linear;
  /** The heads this device holds: all of them until a tensor-parallel shard is loaded. */
  private heads: { numKeyHeads: number; numValueHeads: number };
  private conv: Tensor | null = null;
  private aLog: Tensor | null = null;
  private dtBias: Tensor | null = null;
  private norm: Tensor | null = null;

  constructor(options: GatedDeltaNetOptions) {
    const { numKeyHeads, numValueHeads, keyDim, valueDim, hiddenSize, prefix } = options;
    if (numValueHeads % numKeyHeads !== 0) throw new Error(`${numValueHeads} linear-attention value heads do not split evenly over ${numKeyHeads} key heads`);
    this.layer = options.layer;
    this.options = options;
    this.heads = { numKeyHeads, numValueHeads };
    const keys = numKeyHeads * keyDim;
    const values = numValueHeads * valueDim;
    const linear = (name: string, rows: number) => Linear.single(`${prefix}.${name}.weight`, rows, hiddenSize, 'column');
    // A shard's rows of [queries, keys, values] (the qkv projection and the convolution's channels) and of [b, a].
    const qkvRows = (_: number, shard: TensorParallelShard) => this.channelRanges(shard);
    const baRows = (_: number, shard: TensorParallelShard) => {
      const { values: heads } = this.headShard(shard);
      return [heads, { start: numValueHeads + heads.start, count: heads.count }];
    };
    const qkvName = `${prefix}.${options.projections === 'grouped' ? 'in_proj_qkvz' : 'in_proj_qkv'}.weight`;
    this.qkv = new Linear({ parts: [{ name: qkvName, rows: 2 * keys + values }], inFeatures: hiddenSize, bias: false, shard: 'column', shardRows: qkvRows });
    if (options.projections === 'grouped') {
      this.z = linear('in_proj_qkvz', values);
      this.ba = new Linear({ parts: [{ name: `${prefix}.in_proj_ba.weight`, rows: 2 * numValueHeads }], inFeatures: hiddenSize, bias: false, shard: 'column', shardRows: baRows });
    } else {
      this.z = linear('in_proj_z', values);
      const part = (name: string) => ({ name: `${prefix}.${name}.weight`, rows: numValueHeads });
      this.ba = new Linear({ parts: [part('in_proj_b'), part('in_proj_a')], inFeatures: hiddenSize, bias: false, shard: 'column' });
    }
    this.out = Linear.single(`${prefix}.out_proj.weight`, hiddenSize, values, 'row');
  }

  /** The key heads and value heads a tensor-parallel shard holds: an equal part of the key heads, with their groups of value heads. */
  private headShard(shard: TensorParallelShard): { keys: RowRange; values: RowRange } {
    const { numKeyHeads, numValueHeads, prefix } = this.options;
    const keys = evenPart(numKeyHeads, shard, `the linear-attention key heads of ${prefix}`);
    const group = numValueHeads / numKeyHeads;
    return { keys, values: { start: keys.start * group, count: keys.count * group } };
  }

  /** A shard's channels of [queries, keys, values]: its key heads' queries and keys, its value heads' values. */
  private channelRanges(shard: TensorParallelShard): RowRange[] {
    const { numKeyHeads, keyDim, valueDim } = this.options;
    const { keys, values } = this.headShard(shard);
    const keyRows = (first: number) => ({ start: first + keys.start * keyDim, count: keys.count * keyDim });
    return [keyRows(0), keyRows(numKeyHeads * keyDim), { start: 2 * numKeyHeads * keyDim + values.start * valueDim, count: values.count * valueDim }];
  }

  /** The convolution's channels (queries, keys, values) of `heads`: this device's by default. */
  private convChannels(heads: { numKeyHeads: number; numValueHeads: number } = this.heads): number {
    const { keyDim, valueDim } = this.options;
    return 2 * heads.numKeyHeads * keyDim + heads.numValueHeads * valueDim;
  }

  /** The convolution's last kernel − 1 inputs and the recurrent matrix of every value head this device holds. */
  get kvSpec(): SequenceStateSpec {
    const { keyDim, valueDim, convKernel } = this.options;
    return { kind: 'state', convElements: (convKernel - 1) * this.convChannels(), recurrentElements: this.heads.numValueHeads * keyDim * valueDim };
  }

  /** It attends to no cached key: its cost per token does not grow with the context. */
  get macsPerKey(): number {
    return 0;
  }

  private get vectorNames(): { conv: string; aLog: string; dtBias: string; norm: string } {
    const p = this.options.prefix;
    return { conv: `${p}.conv1d.weight`, aLog: `${p}.A_log`, dtBias: `${p}.dt_bias`, norm: `${p}.norm.weight` };
  }

  parameters(): ParameterSpec[] {
    const { numKeyHeads, numValueHeads, keyDim, valueDim, hiddenSize, convKernel, projections, prefix } = this.options;
    const names = this.vectorNames;
    const vectors: ParameterSpec[] = [
      { name: names.conv, shape: [this.convChannels(this.options), 1, convKernel] },
      { name: names.aLog, shape: [numValueHeads] },
      { name: names.dtBias, shape: [numValueHeads] },
      { name: names.norm, shape: [valueDim] },
    ];
    const inputs: ParameterSpec[] =
      projections === 'grouped'
        ? [
            { name: `${prefix}.in_proj_qkvz.weight`, shape: [2 * numKeyHeads * keyDim + 2 * numValueHeads * valueDim, hiddenSize] },
            { name: `${prefix}.in_proj_ba.weight`, shape: [2 * numValueHeads, hiddenSize] },
          ]
        : parametersOf([this.qkv, this.z, this.ba]);
    return [...inputs, ...vectors, ...this.out.parameters()];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    const shard = shardOf(source);
    const { keys, values } = this.headShard(shard);
    this.heads = { numKeyHeads: keys.count, numValueHeads: values.count };
    if (this.options.projections === 'grouped') {
      const [qkv, z, ba] = this.groupedRows();
      const { prefix } = this.options;
      this.qkv.load(selectedRows(source, { [`${prefix}.in_proj_qkvz.weight`]: qkv }), uploader);
      this.z.load(selectedRows(source, { [`${prefix}.in_proj_qkvz.weight`]: z }), uploader);
      this.ba.load(selectedRows(source, { [`${prefix}.in_proj_ba.weight`]: ba }), uploader);
    } else {
      loadLayers([this.qkv, this.z, this.ba], source, uploader);
    }
    this.out.load(source, uploader);
    const names = this.vectorNames;
    const conv = readRowRanges(source, names.conv, this.channelRanges(shard));
    // [channels, 1, kernel] depthwise filters, one row per channel.
    this.conv = uploader.loadWeight({ ...conv, shape: [this.convChannels(), this.options.convKernel] });
    // transformers computes the decay in float32 whatever the model's dtype.
    this.aLog = uploader.loadWeight(readSlice(source, names.aLog, { dim: 0, ...values }), { float32: true });
    this.dtBias = uploader.loadWeight(readSlice(source, names.dtBias, { dim: 0, ...values }), { float32: true });
    this.norm = uploader.loadWeight(source.read(names.norm));
  }

  /**
   * Qwen3-Next's rows in the layer's order: of `in_proj_qkvz` (per key head g a block of its query,
   * its key, then its group's values and gates) the qkv rows and the z rows; of `in_proj_ba` (per
   * key head its group's b, then a) every b then every a.
   */
  private groupedRows(): [RowSelection, RowSelection, RowSelection] {
    const { numKeyHeads, numValueHeads, keyDim, valueDim } = this.options;
    const groupValues = (numValueHeads / numKeyHeads) * valueDim;
    const block = 2 * keyDim + 2 * groupValues;
    const keys = numKeyHeads * keyDim;
    const qkvRow = (r: number) => {
      if (r < 2 * keys) {
        const part = r < keys ? 0 : 1;
        const i = r - part * keys;
        return Math.floor(i / keyDim) * block + part * keyDim + (i % keyDim);
      }
      const i = r - 2 * keys;
      return Math.floor(i / groupValues) * block + 2 * keyDim + (i % groupValues);
    };
    const zRow = (r: number) => Math.floor(r / groupValues) * block + 2 * keyDim + groupValues + (r % groupValues);
    const group = numValueHeads / numKeyHeads;
    const baRow = (r: number) => {
      const part = r < numValueHeads ? 0 : 1;
      const h = r - part * numValueHeads;
      return Math.floor(h / group) * 2 * group + part * group + (h % group);
    };
    return [
      { count: this.qkv.outFeatures, row: qkvRow },
      { count: this.z.outFeatures, row: zRow },
      { count: this.ba.outFeatures, row: baRow },
    ];
  }

  /** x [numTokens, hidden] -> [numTokens, hidden]; updates each sequence's state slot. */
  forward(b: Backend, x: Tensor, step: StepInputs, cache: KvCache): Tensor {
    const { layer, options } = this;
    const { keyDim, valueDim } = options;
    const { numKeyHeads, numValueHeads } = this.heads;
    const names = this.vectorNames;
    const qkv = b.causalConv1d(this.qkv.forward(b, x), loaded(this.conv, names.conv), null, cache, layer, step);
    const params: DeltaRuleParams = { numKeyHeads, numValueHeads, keyDim, valueDim, decay: 'head' };
    const core = b.gatedDeltaRule(qkv, this.ba.forward(b, x), loaded(this.aLog, names.aLog), loaded(this.dtBias, names.dtBias), cache, layer, step, params);
    const normed = b.gatedRmsNorm(core, this.z.forward(b, x), loaded(this.norm, names.norm), options.eps, 'silu');
    return b.allReduce(this.out.forward(b, normed));
  }
}
