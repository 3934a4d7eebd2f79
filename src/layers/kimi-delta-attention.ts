import type { Backend, DeltaRuleParams, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import type { SequenceStateSpec } from '../step/kv-cache-layout.ts';
import { concatRows } from '../tensor/host-ops.ts';
import { Linear, type RowRange } from './linear.ts';
import { loaded, loadLayers, parametersOf, type Layer, type ParameterSpec, type TensorParallelShard, type WeightSource, type WeightUploader } from './parameters.ts';
import { evenPart, readSlice, shardOf } from './shard.ts';

export interface KimiDeltaAttentionOptions {
  /** This layer's index in the KV cache layout. */
  layer: number;
  /** Checkpoint prefix of the layer's tensors (`model.layers.<i>.self_attn`). */
  prefix: string;
  hiddenSize: number;
  /** linear_attn_config's num_heads and head_dim: every head has its own query, key and value of headDim. */
  numHeads: number;
  headDim: number;
  /** Width of the short convolutions over queries, keys and values (short_conv_kernel_size). */
  convKernel: number;
  /** The output norm's epsilon (rms_norm_eps). */
  eps: number;
}

/**
 * Kimi Delta Attention (KDA: Kimi Linear's linear attention; transformers' KimiLinearDeltaAttention):
 * Gated DeltaNet's delta rule with a decay per key channel. q, k and v projections, each through a
 * short causal convolution and silu; β = σ(b_proj(x)) per head; the decays from a low-rank forget
 * gate, a = f_b_proj(f_a_proj(x)) per key channel, g = −exp(A_log_h) · softplus(a + dt_bias); the
 * backend's gatedDeltaRule (`decay: 'keyChannel'`) over a recurrent state per sequence; RMSNorm per
 * head gated by σ(g_b_proj(g_a_proj(x))); o_proj. Its KV spec is a per-sequence state, as Gated
 * DeltaNet's.
 *
 * At load the checkpoint's three convolutions (q_conv1d, k_conv1d, v_conv1d) become one filter
 * over the stacked q/k/v channels, and A_log ([1, 1, heads, 1]) one value per head.
 *
 * Tensor parallel: each device holds an equal part of the heads (their rows of q/k/v, b, f_b and
 * g_b, their conv channels, decays and state); the low-rank f_a and g_a are replicated; o_proj's
 * matching input columns are summed by an all-reduce.
 */
export class KimiDeltaAttention implements Layer {
  readonly layer: number;
  private readonly options: KimiDeltaAttentionOptions;
  private readonly qkv: Linear;
  private readonly beta: Linear;
  private readonly forgetDown: Linear;
  private readonly forgetUp: Linear;
  private readonly gateDown: Linear;
  private readonly gateUp: Linear;
  private readonly out: Linear;
  /** The heads this device holds: all of them until a tensor-parallel shard is loaded. */
  private heads: number;
  private conv: Tensor | null = null;
  private aLog: Tensor | null = null;
  private dtBias: Tensor | null = null;
  private norm: Tensor | null = null;

  constructor(options: KimiDeltaAttentionOptions) {
    const { prefix, hiddenSize, numHeads, headDim } = options;
    this.layer = options.layer;
    this.options = options;
    this.heads = numHeads;
    const width = numHeads * headDim;
    const name = (projection: string) => `${prefix}.${projection}.weight`;
    // A shard's rows of a projection with headDim rows per head.
    const headRows = (_: number, shard: TensorParallelShard) => [this.rowsOf(shard, headDim)];
    const perHead = (parts: string[], rows: number, inFeatures: number, shardRows: (i: number, s: TensorParallelShard) => RowRange[]) =>
      new Linear({ parts: parts.map((p) => ({ name: name(p), rows })), inFeatures, bias: false, shard: 'column', shardRows });
    this.qkv = perHead(['q_proj', 'k_proj', 'v_proj'], width, hiddenSize, headRows);
    this.beta = perHead(['b_proj'], numHeads, hiddenSize, (_, shard) => [this.rowsOf(shard, 1)]);
    this.forgetDown = Linear.single(name('f_a_proj'), headDim, hiddenSize, 'replicated');
    this.forgetUp = perHead(['f_b_proj'], width, headDim, headRows);
    this.gateDown = Linear.single(name('g_a_proj'), headDim, hiddenSize, 'replicated');
    this.gateUp = perHead(['g_b_proj'], width, headDim, headRows);
    this.out = Linear.single(name('o_proj'), hiddenSize, width, 'row');
  }

  /** A shard's rows of a tensor holding `perHead` rows per head, head by head. */
  private rowsOf(shard: TensorParallelShard, perHead: number): RowRange {
    const heads = evenPart(this.options.numHeads, shard, `the linear-attention heads of ${this.options.prefix}`);
    return { start: heads.start * perHead, count: heads.count * perHead };
  }

  private get linears(): Linear[] {
    return [this.qkv, this.beta, this.forgetDown, this.forgetUp, this.gateDown, this.gateUp, this.out];
  }

  private get vectorNames(): { convs: string[]; aLog: string; dtBias: string; norm: string } {
    const p = this.options.prefix;
    return { convs: ['q', 'k', 'v'].map((c) => `${p}.${c}_conv1d.weight`), aLog: `${p}.A_log`, dtBias: `${p}.dt_bias`, norm: `${p}.o_norm.weight` };
  }

  /** The convolutions' last kernel − 1 inputs (queries, keys, values) and every held head's recurrent matrix. */
  get kvSpec(): SequenceStateSpec {
    const { headDim, convKernel } = this.options;
    return { kind: 'state', convElements: (convKernel - 1) * 3 * this.heads * headDim, recurrentElements: this.heads * headDim * headDim };
  }

  /** It attends to no cached key: its cost per token does not grow with the context. */
  get macsPerKey(): number {
    return 0;
  }

  parameters(): ParameterSpec[] {
    const { numHeads, headDim, convKernel } = this.options;
    const names = this.vectorNames;
    return [
      ...parametersOf(this.linears),
      ...names.convs.map((conv) => ({ name: conv, shape: [numHeads * headDim, 1, convKernel] })),
      { name: names.aLog, shape: [1, 1, numHeads, 1] },
      { name: names.dtBias, shape: [numHeads * headDim] },
      { name: names.norm, shape: [headDim] },
    ];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    const { headDim, convKernel } = this.options;
    const shard = shardOf(source);
    const channels = this.rowsOf(shard, headDim);
    this.heads = channels.count / headDim;
    loadLayers(this.linears, source, uploader);
    const names = this.vectorNames;
    // [channels, 1, kernel] depthwise filters of q, k and v, stacked as the qkv projection's rows.
    const conv = concatRows(names.convs.map((n) => readSlice(source, n, { dim: 0, ...channels })));
    this.conv = uploader.loadWeight({ ...conv, shape: [3 * channels.count, convKernel] });
    // transformers computes the decay in float32 whatever the model's dtype.
    const aLog = readSlice(source, names.aLog, { dim: 2, start: channels.start / headDim, count: this.heads });
    this.aLog = uploader.loadWeight({ ...aLog, shape: [this.heads] }, { float32: true });
    this.dtBias = uploader.loadWeight(readSlice(source, names.dtBias, { dim: 0, ...channels }), { float32: true });
    this.norm = uploader.loadWeight(source.read(names.norm));
  }

  /** x [numTokens, hidden] -> [numTokens, hidden]; updates each sequence's state slot. */
  forward(b: Backend, x: Tensor, step: StepInputs, cache: KvCache): Tensor {
    const { layer, options } = this;
    const { headDim, eps } = options;
    const names = this.vectorNames;
    const qkv = b.causalConv1d(this.qkv.forward(b, x), loaded(this.conv, names.convs[0]), null, cache, layer, step);
    const ba = b.concatColumns([this.beta.forward(b, x), this.forgetUp.forward(b, this.forgetDown.forward(b, x))]);
    const params: DeltaRuleParams = { numKeyHeads: this.heads, numValueHeads: this.heads, keyDim: headDim, valueDim: headDim, decay: 'keyChannel' };
    const core = b.gatedDeltaRule(qkv, ba, loaded(this.aLog, names.aLog), loaded(this.dtBias, names.dtBias), cache, layer, step, params);
    const gate = this.gateUp.forward(b, this.gateDown.forward(b, x));
    const normed = b.gatedRmsNorm(core, gate, loaded(this.norm, names.norm), eps, 'sigmoid');
    return b.allReduce(this.out.forward(b, normed));
  }
}
