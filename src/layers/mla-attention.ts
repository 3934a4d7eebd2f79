import type { Backend, KvCache, MlaParams, QueryTemperature, StepInputs, Tensor } from '../backend/backend.ts';
import type { DecodeSelection, MlaKvSpec } from '../step/kv-cache-layout.ts';
import { gatherElements } from '../tensor/host-ops.ts';
import { interleavedRow, withPermutedRows } from './interleaved-rope.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import type { LightningIndexer, SelectionRelay } from './lightning-indexer.ts';
import { Linear } from './linear.ts';
import { RmsNorm } from './norm.ts';
import { loaded, loadLayers, parametersOf, type Layer, type ParameterSpec, type TensorParallelShard, type WeightSource, type WeightUploader } from './parameters.ts';
import { evenPart, readSlice, shardOf } from './shard.ts';
import type { RotaryEmbedding } from './rotary.ts';

export interface MlaAttentionOptions {
  /** This layer's index in the KV cache layout. */
  layer: number;
  hiddenSize: number;
  numHeads: number;
  /** Rank of the query's low-rank path (q_a_proj, its norm, q_b_proj), or null for one q_proj. */
  queryRank: number | null;
  /** Width of the cached latent (kv_lora_rank). */
  latentDim: number;
  /** Per head: query/key dimensions without rotation, with rotation, and the value width. */
  nopeDim: number;
  ropeDim: number;
  valueDim: number;
  scale: number;
  /** Each query scaled by its position's temperature after RoPE (Mistral 4's llama_4_scaling_beta); null: none. */
  queryTemperature: QueryTemperature | null;
  /** Epsilon of q_a_layernorm and kv_a_layernorm. */
  normEps: number;
  /** Rotates ropeDim dimensions. */
  rotary: RotaryEmbedding;
  /**
   * The checkpoint's rotary dimensions pair as (x[2i], x[2i+1]), DeepSeek's complex form, rather
   * than rotate_half's (x[i], x[i + ropeDim/2]).
   */
  interleavedRope: boolean;
  /** q_a_proj, kv_a_proj_with_mqa and o_proj carry biases (attention_bias). */
  bias: boolean;
  /** Checkpoint prefix of the projections, e.g. `model.layers.3.self_attn`. */
  prefix: string;
  /**
   * DeepSeek-V3.2's sparse attention: the indexer choosing the positions each token attends to,
   * fed the normalized query latent (so it needs q_lora_rank); null for dense MLA.
   */
  indexer: LightningIndexer | null;
  /**
   * A sparse layer without an indexer of its own (GLM-5's "shared" layers): it attends to the
   * positions the latest layer before it with an indexer chose, handed over through this relay.
   */
  sharedSelection: SelectionRelay | null;
}

/**
 * DeepSeek's multi-head latent attention. Each token caches one row shared by every head: the
 * RMS-normalized latent c = norm(W_DKV x) and the rotated key part k_rope. Head h's key is
 * [W_UK[h] c | k_rope] and its value W_UV[h] c, with W_UK and W_UV the two halves of kv_b_proj;
 * neither is ever materialized. Instead the up-projections are absorbed:
 *
 *   q_nope · (W_UK[h] c) = (W_UK[h]ᵀ q_nope) · c,   Σ_j p_j W_UV[h] c_j = W_UV[h] Σ_j p_j c_j,
 *
 * so queries are projected into the latent space (by W_UK[h]ᵀ), attention runs over the cached
 * rows themselves, and its latent output is projected back per head (by W_UV[h]) before o_proj:
 * Backend.mlaAttentionHeads, which may run long chunks in the expanded form instead (the keys and
 * values materialized from the cached rows, cheaper once many queries share them). kv_b_proj is
 * split into those two per-head matrices at load. Interleaved rotary pairs are permuted at load,
 * in the rows of the query projection and of kv_a_proj_with_mqa that produce them, into
 * rotate_half order: scores are dot products of query and key rope parts, which a shared
 * permutation leaves unchanged, so the backend's rotary stays rotate_half.
 */
export class MlaAttention implements Layer {
  readonly layer: number;
  private readonly options: MlaAttentionOptions;
  private readonly query: { proj: Linear } | { down: Linear; norm: RmsNorm; up: Linear };
  private readonly kvDown: Linear;
  private readonly kvNorm: RmsNorm;
  private readonly kvUpName: string;
  private readonly o: Linear;
  /** The heads this device holds: all of them until a tensor-parallel shard is loaded. */
  private numHeads: number;
  private keyAbsorption: Tensor | null = null;
  private valueAbsorption: Tensor | null = null;

  constructor(options: MlaAttentionOptions) {
    const { hiddenSize, numHeads, queryRank, latentDim, nopeDim, ropeDim, valueDim, normEps, prefix, bias } = options;
    if (options.rotary.config.rotaryDim !== ropeDim) throw new Error(`MLA rotary dim ${options.rotary.config.rotaryDim} != qk_rope_head_dim ${ropeDim}`);
    this.layer = options.layer;
    this.options = options;
    this.numHeads = numHeads;
    const headWidth = nopeDim + ropeDim;
    // Tensor parallel: a device holds its heads' query rows, kv_b_proj rows and o_proj columns.
    const shardRows = (_index: number, shard: TensorParallelShard) => {
      const heads = evenPart(numHeads, shard, 'the MLA heads');
      return [{ start: heads.start * headWidth, count: heads.count * headWidth }];
    };
    const queryUp = (name: string, inFeatures: number) =>
      new Linear({ parts: [{ name, rows: numHeads * headWidth }], inFeatures, bias: false, shard: 'column', shardRows });
    this.query =
      queryRank === null
        ? { proj: queryUp(`${prefix}.q_proj.weight`, hiddenSize) }
        : {
            down: Linear.single(`${prefix}.q_a_proj.weight`, queryRank, hiddenSize, 'replicated', bias),
            norm: new RmsNorm(`${prefix}.q_a_layernorm.weight`, queryRank, normEps),
            up: queryUp(`${prefix}.q_b_proj.weight`, queryRank),
          };
    this.kvDown = Linear.single(`${prefix}.kv_a_proj_with_mqa.weight`, latentDim + ropeDim, hiddenSize, 'replicated', bias);
    this.kvNorm = new RmsNorm(`${prefix}.kv_a_layernorm.weight`, latentDim, normEps);
    this.kvUpName = `${prefix}.kv_b_proj.weight`;
    this.o = Linear.single(`${prefix}.o_proj.weight`, hiddenSize, numHeads * valueDim, 'row', bias);
    if (options.indexer !== null && queryRank === null) throw new Error(`${prefix}: the sparse-attention indexer reads the query latent, which needs q_lora_rank`);
  }

  get kvSpec(): MlaKvSpec {
    const { latentDim, ropeDim, indexer } = this.options;
    return { kind: 'mla', latentDim, ropeDim, ...(indexer === null ? {} : { indexKeys: indexer.indexKeys }) };
  }

  /** DeepSeek Sparse Attention's top-k positions: its indexer's, or those of the layer it shares a choice with. */
  get decodeSelection(): DecodeSelection | null {
    const topK = this.options.indexer?.topK ?? this.options.sharedSelection?.topK;
    return topK === undefined ? null : { kind: 'top-k', topK };
  }

  /** Multiply-adds per query token for each cached row it attends to, in the absorbed form Keel runs. */
  get macsPerKey(): number {
    const { latentDim, ropeDim } = this.options;
    return this.numHeads * (2 * latentDim + ropeDim);
  }

  private get params(): MlaParams {
    const { latentDim, ropeDim, nopeDim, scale, queryTemperature } = this.options;
    return { numHeads: this.numHeads, latentDim, ropeDim, nopeDim, scale, queryTemperature };
  }

  private get projections(): Layer[] {
    const q = 'proj' in this.query ? [this.query.proj] : [this.query.down, this.query.norm, this.query.up];
    return [...q, this.kvDown, this.kvNorm, this.o, ...(this.options.indexer === null ? [] : [this.options.indexer])];
  }

  parameters(): ParameterSpec[] {
    const { numHeads, nopeDim, valueDim, latentDim } = this.options;
    return [...parametersOf(this.projections), { name: this.kvUpName, shape: [numHeads * (nopeDim + valueDim), latentDim] }];
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    loadLayers(this.projections, this.options.interleavedRope ? this.ropePermuted(source) : source, uploader);
    const { numHeads, nopeDim, valueDim } = this.options;
    const heads = evenPart(numHeads, shardOf(source), 'the MLA heads');
    this.numHeads = heads.count;
    const headRows = nopeDim + valueDim;
    const kvUp = readSlice(source, this.kvUpName, { dim: 0, start: heads.start * headRows, count: heads.count * headRows });
    this.keyAbsorption = uploader.loadWeight(this.splitKvUp(kvUp, 'key'));
    this.valueAbsorption = uploader.loadWeight(this.splitKvUp(kvUp, 'value'));
  }

  /** x [numTokens, hidden] -> [numTokens, hidden]; caches the step's rows. */
  forward(b: Backend, x: Tensor, step: StepInputs, cache: KvCache): Tensor {
    const params = this.params;
    let q: Tensor;
    let queryLatent: Tensor | null = null;
    if ('proj' in this.query) {
      q = this.query.proj.forward(b, x);
    } else {
      queryLatent = this.query.norm.forward(b, this.query.down.forward(b, x));
      q = this.query.up.forward(b, queryLatent);
    }
    const kv = this.kvDown.forward(b, x);
    b.mlaRopeAndCacheWrite(q, kv, this.kvNorm.weight, this.kvNorm.eps, this.options.rotary.table, cache, this.layer, step, params);
    // The constructor refused an indexer without the query latent.
    const { indexer, sharedSelection } = this.options;
    const selection = indexer !== null && queryLatent !== null
      ? indexer.forward(b, x, queryLatent, step, cache)
      : sharedSelection?.take(step) ?? null;
    const up = { keyAbsorption: loaded(this.keyAbsorption, this.kvUpName), valueAbsorption: loaded(this.valueAbsorption, this.kvUpName) };
    const heads = b.mlaAttentionHeads(q, cache, this.layer, step, params, up, selection);
    return b.allReduce(this.o.forward(b, heads));
  }

  /**
   * kv_b_proj's rows of this device's heads, [numHeads * (nopeDim + valueDim), latentDim], hold per head W_UK [nopeDim, latent]
   * then W_UV [valueDim, latent]. `key`: W_UKᵀ per head, [numHeads, latent, nopeDim], which
   * projects a query's nope part into the latent space; `value`: W_UV, [numHeads, valueDim, latent].
   */
  private splitKvUp(kvUp: HostTensor, part: 'key' | 'value'): HostTensor {
    const { nopeDim, valueDim, latentDim } = this.options;
    const numHeads = this.numHeads;
    const headRows = nopeDim + valueDim;
    if (part === 'value') {
      return gatherElements(kvUp, [numHeads, valueDim, latentDim], (h, v, latent) => (h * headRows + nopeDim + v) * latentDim + latent);
    }
    return gatherElements(kvUp, [numHeads, latentDim, nopeDim], (h, latent, nope) => (h * headRows + nope) * latentDim + latent);
  }

  /** `source` with the rotary rows of the query projection and kv_a_proj_with_mqa in rotate_half order. */
  private ropePermuted(source: WeightSource): WeightSource {
    const { nopeDim, ropeDim, latentDim, prefix } = this.options;
    const headWidth = nopeDim + ropeDim;
    const queryRow = (r: number) => {
      const within = r % headWidth;
      return within < nopeDim ? r : r - within + nopeDim + interleavedRow(within - nopeDim, ropeDim);
    };
    const kvRow = (r: number) => (r < latentDim ? r : latentDim + interleavedRow(r - latentDim, ropeDim));
    return withPermutedRows(source, {
      [`${prefix}.${'proj' in this.query ? 'q_proj' : 'q_b_proj'}.weight`]: queryRow,
      [`${prefix}.kv_a_proj_with_mqa.weight`]: kvRow,
      [`${prefix}.kv_a_proj_with_mqa.bias`]: kvRow,
    });
  }
}
