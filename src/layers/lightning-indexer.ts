import type { Backend, IndexerParams, KvCache, StepInputs, Tensor, TokenSelection } from '../backend/backend.ts';
import type { IndexKeysSpec } from '../step/kv-cache-layout.ts';
import { interleavedRow, withPermutedRows } from './interleaved-rope.ts';
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
  /**
   * The checkpoint's rotary dims pair as (x[2i], x[2i+1]) (GLM-5), rather than rotate_half's
   * (DeepSeek-V3.2): the rows of wq_b, wk and the key norm that produce them are permuted at load.
   */
  interleavedRope: boolean;
  /** Where this layer leaves its choice for the layers that share it (GLM-5's `indexer_types`); null where none do. */
  relay: SelectionRelay | null;
  /** Checkpoint prefix, e.g. `model.layers.3.self_attn.indexer`. */
  prefix: string;
}

/**
 * GLM-5's top-k sharing: within one step, the positions the latest layer with an indexer of its
 * own chose, which the "shared" layers after it attend to. Held with the step it belongs to, so a
 * shared layer never attends with another step's choice.
 */
export class SelectionRelay {
  /** Positions each choice holds: the indexers' index_topk. */
  readonly topK: number;
  private latest: { step: StepInputs; selection: TokenSelection } | null = null;

  constructor(topK: number) {
    this.topK = topK;
  }

  publish(step: StepInputs, selection: TokenSelection): void {
    this.latest = { step, selection };
  }

  take(step: StepInputs): TokenSelection {
    if (this.latest?.step !== step) throw new Error('a shared sparse-attention layer ran before any layer of its step chose positions');
    return this.latest.selection;
  }
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
 * the leading ropeDim dims of q_h and k rotated (rotate_half pairs in V3.2, unlike MLA's
 * interleaved ones; interleaved in GLM-5), and scores position j as
 * Σ_h w_h / √numHeads · relu(q_h · k_j / √headDim). The weights are replicated under tensor
 * parallelism: every device makes the same choice.
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

  /** Positions it chooses for each token (index_topk). */
  get topK(): number {
    return this.options.topK;
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
    loadLayers(this.sublayers, this.options.interleavedRope ? this.ropePermuted(source) : source, uploader);
  }

  /** `source` with the rows of each query head's and of the key's leading rotary dims (the key norm's too) in rotate_half order. */
  private ropePermuted(source: WeightSource): WeightSource {
    const { headDim, prefix } = this.options;
    const ropeDim = this.options.rotary.config.rotaryDim;
    const keyRow = (r: number) => (r < ropeDim ? interleavedRow(r, ropeDim) : r);
    const queryRow = (r: number) => r - (r % headDim) + keyRow(r % headDim);
    return withPermutedRows(source, {
      [`${prefix}.wq_b.weight`]: queryRow,
      [`${prefix}.wk.weight`]: keyRow,
      [`${prefix}.k_norm.weight`]: keyRow,
      [`${prefix}.k_norm.bias`]: keyRow,
    });
  }

  /** x [numTokens, hidden] and the MLA's query latent [numTokens, queryRank]; caches the step's keys, returns each token's positions. */
  forward(b: Backend, x: Tensor, queryLatent: Tensor, step: StepInputs, cache: KvCache): TokenSelection {
    const params = this.params;
    const q = this.query.forward(b, queryLatent);
    const k = this.key.forward(b, x);
    b.indexerRopeAndCacheWrite(q, k, this.keyNorm.weight, this.keyNorm.bias, this.keyNorm.eps, this.options.rotary.table, cache, this.options.layer, step, params);
    const selection = b.indexerTopK(q, this.weights.forward(b, x), cache, this.options.layer, step, params);
    this.options.relay?.publish(step, selection);
    return selection;
  }
}
