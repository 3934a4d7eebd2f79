import type { Backend, IndexerParams, KvCache, StepInputs, Tensor, TokenSelection } from '../backend/backend.ts';
import type { IndexKeysSpec } from '../step/kv-cache-layout.ts';
import { Linear } from './linear.ts';
import { LayerNorm } from './norm.ts';
import { loadLayers, parametersOf, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from './parameters.ts';
import type { RotaryEmbedding } from './rotary.ts';

export interface LightningIndexerOptions {
  /** The MLA layer's index in the KV cache layout: its indexer keys sit beside its latent rows. */
  layer: number;
  hiddenSize: number;
  /** Width of the query's low-rank path the queries are projected from (q_lora_rank). */
  queryRank: number;
  /** index_n_heads, index_head_dim, index_topk. */
  numHeads: number;
  headDim: number;
  topK: number;
  /** The MLA layer's table: it rotates the leading qk_rope_head_dim dims of each query head and of the key. */
  rotary: RotaryEmbedding;
  /** Checkpoint prefix, e.g. `model.layers.3.self_attn.indexer`. */
  prefix: string;
}

/** transformers' DeepseekV32Indexer LayerNorm keeps nn.LayerNorm's eps of 1e-6. */
const KEY_NORM_EPS = 1e-6;

/**
 * DeepSeek-V3.2's lightning indexer (DeepSeek Sparse Attention): picks, for each token, the
 * `topK` earlier positions of its sequence its MLA attends to. Per token it has
 *
 *   queries q_h = wq_b(c_q) (numHeads × headDim, c_q the MLA's normalized query latent),
 *   one key k = LayerNorm(wk(x)) (headDim, cached per token beside the MLA latent),
 *   head weights w_h = weights_proj(x) (float32, as transformers keeps the projection),
 *
 * the leading ropeDim dims of q_h and k rotated (rotate_half pairs, unlike MLA's interleaved
 * ones), and scores position j as Σ_h w_h / √numHeads · relu(q_h · k_j / √headDim). The weights
 * are replicated under tensor parallelism: every device makes the same choice.
 */
export class LightningIndexer implements Layer {
  private readonly options: LightningIndexerOptions;
  private readonly query: Linear;
  private readonly key: Linear;
  private readonly keyNorm: LayerNorm;
  private readonly weights: Linear;

  constructor(options: LightningIndexerOptions) {
    const { hiddenSize, queryRank, numHeads, headDim, prefix } = options;
    const ropeDim = options.rotary.config.rotaryDim;
    if (ropeDim > headDim) throw new Error(`indexer head dim ${headDim} is smaller than the rotated ${ropeDim} dims`);
    this.options = options;
    this.query = Linear.single(`${prefix}.wq_b.weight`, numHeads * headDim, queryRank, 'replicated');
    this.key = Linear.single(`${prefix}.wk.weight`, headDim, hiddenSize, 'replicated');
    this.keyNorm = new LayerNorm(`${prefix}.k_norm`, headDim, KEY_NORM_EPS);
    this.weights = new Linear({ parts: [{ name: `${prefix}.weights_proj.weight`, rows: numHeads }], inFeatures: hiddenSize, bias: false, shard: 'replicated', dense: true, float32Output: true });
  }

  get indexKeys(): IndexKeysSpec {
    return { keyDim: this.options.headDim };
  }

  private get params(): IndexerParams {
    const { numHeads, headDim, topK, rotary } = this.options;
    return { numHeads, headDim, ropeDim: rotary.config.rotaryDim, topK, scale: headDim ** -0.5, weightScale: numHeads ** -0.5 };
  }

  private get sublayers(): Layer[] {
    return [this.query, this.key, this.keyNorm, this.weights];
  }

  parameters(): ParameterSpec[] {
    return parametersOf(this.sublayers);
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    loadLayers(this.sublayers, source, uploader);
  }

  /** x [numTokens, hidden] and the MLA's query latent [numTokens, queryRank]; caches the step's keys, returns each token's positions. */
  forward(b: Backend, x: Tensor, queryLatent: Tensor, step: StepInputs, cache: KvCache): TokenSelection {
    const params = this.params;
    const q = this.query.forward(b, queryLatent);
    const k = this.key.forward(b, x);
    b.indexerRopeAndCacheWrite(q, k, this.keyNorm.weight, this.keyNorm.bias, this.keyNorm.eps, this.options.rotary.table, cache, this.options.layer, step, params);
    return b.indexerTopK(q, this.weights.forward(b, x), cache, this.options.layer, step, params);
  }
}
