import { Presets, SingleBar } from 'cli-progress';
import type { Backend, HostTensor, Tensor } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import type { Checkpoint } from './checkpoint.ts';
import { hostTensorToFloat32 } from './host-dtype.ts';
import type { LayerWeights, LlamaWeights } from './llama-weights.ts';
import type { ModelConfig } from './model-config.ts';

export interface LoadProgress {
  /** Called after each checkpoint tensor is read; `total` counts the tensors the model uses. */
  onProgress?(done: number, total: number): void;
}

/** Only uploading is needed, so tests can pass a recorder instead of a whole backend. */
export type WeightUploader = Pick<Backend, 'loadWeight'>;

/**
 * Maps Hugging Face tensor names onto LlamaWeights. q/k/v rows (and biases) are concatenated into
 * `qkv` and gate/up rows into `gateUp` on the host, so the backend sees one tensor per GEMM. Every
 * shape is checked against the config before any data is read. Tensors the model does not use
 * (a tied checkpoint's `lm_head.weight`, old `rotary_emb.inv_freq` buffers) are ignored.
 */
export function loadLlamaWeights(ckpt: Checkpoint, config: ModelConfig, backend: WeightUploader, opts: LoadProgress = {}): LlamaWeights {
  const expected = expectedTensorShapes(config);
  for (const [name, shape] of expected) {
    if (!ckpt.has(name)) throw invalidModel(`checkpoint ${ckpt.dir} is missing tensor "${name}" (expected shape [${shape.join(', ')}])`);
    const actual = ckpt.info(name).shape;
    if (actual.length !== shape.length || actual.some((d, i) => d !== shape[i])) {
      throw invalidModel(`checkpoint ${ckpt.dir}: tensor "${name}" has shape [${actual.join(', ')}] but config.json implies [${shape.join(', ')}]`);
    }
  }

  let done = 0;
  const read = (name: string): HostTensor => {
    const t = ckpt.read(name);
    opts.onProgress?.(++done, expected.size);
    return t;
  };
  const load = (name: string): Tensor => backend.loadWeight(read(name));
  const loadConcatenated = (names: string[]): Tensor => backend.loadWeight(concatRows(names.map(read)));

  const embedding = load('model.embed_tokens.weight');
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const attn = `model.layers.${i}.self_attn`;
    const mlp = `model.layers.${i}.mlp`;
    layers.push({
      inputNorm: load(`model.layers.${i}.input_layernorm.weight`),
      qkv: loadConcatenated([`${attn}.q_proj.weight`, `${attn}.k_proj.weight`, `${attn}.v_proj.weight`]),
      qkvBias: config.attentionBias ? loadConcatenated([`${attn}.q_proj.bias`, `${attn}.k_proj.bias`, `${attn}.v_proj.bias`]) : null,
      qNorm: config.qkNorm ? load(`${attn}.q_norm.weight`) : null,
      kNorm: config.qkNorm ? load(`${attn}.k_norm.weight`) : null,
      o: load(`${attn}.o_proj.weight`),
      oBias: config.outputBias ? load(`${attn}.o_proj.bias`) : null,
      postAttentionNorm: load(`model.layers.${i}.post_attention_layernorm.weight`),
      gateUp: loadConcatenated([`${mlp}.gate_proj.weight`, `${mlp}.up_proj.weight`]),
      down: load(`${mlp}.down_proj.weight`),
    });
  }
  const finalNorm = load('model.norm.weight');
  const lmHead = config.tieWordEmbeddings ? embedding : load('lm_head.weight');
  return { embedding, layers, finalNorm, lmHead };
}

/**
 * `loadLlamaWeights` with a progress bar on stderr (when it is a terminal and `showProgress` is
 * set); closes the checkpoint when done.
 */
export function loadModelWeights(ckpt: Checkpoint, config: ModelConfig, backend: WeightUploader, options: { showProgress: boolean }): LlamaWeights {
  const bar =
    options.showProgress && process.stderr.isTTY
      ? new SingleBar({ stream: process.stderr, format: 'loading weights [{bar}] {value}/{total} tensors {duration}s', hideCursor: true }, Presets.shades_classic)
      : null;
  try {
    const onProgress = bar ? (done: number, total: number) => (done === 1 ? bar.start(total, done) : bar.update(done)) : undefined;
    return loadLlamaWeights(ckpt, config, backend, { onProgress });
  } finally {
    bar?.stop();
    ckpt.close();
  }
}

/** HF tensor name -> shape for every tensor the config needs, in load order. */
export function expectedTensorShapes(config: ModelConfig): Map<string, number[]> {
  const { hiddenSize: h, vocabSize: v, intermediateSize: m, headDim: d, numHeads, numKvHeads } = config;
  const shapes = new Map<string, number[]>([['model.embed_tokens.weight', [v, h]]]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `model.layers.${i}`;
    shapes.set(`${layer}.input_layernorm.weight`, [h]);
    for (const [proj, rows] of [['q', numHeads * d], ['k', numKvHeads * d], ['v', numKvHeads * d]] as const) {
      shapes.set(`${layer}.self_attn.${proj}_proj.weight`, [rows, h]);
      if (config.attentionBias) shapes.set(`${layer}.self_attn.${proj}_proj.bias`, [rows]);
    }
    if (config.qkNorm) {
      shapes.set(`${layer}.self_attn.q_norm.weight`, [d]);
      shapes.set(`${layer}.self_attn.k_norm.weight`, [d]);
    }
    shapes.set(`${layer}.self_attn.o_proj.weight`, [h, numHeads * d]);
    if (config.outputBias) shapes.set(`${layer}.self_attn.o_proj.bias`, [h]);
    shapes.set(`${layer}.post_attention_layernorm.weight`, [h]);
    shapes.set(`${layer}.mlp.gate_proj.weight`, [m, h]);
    shapes.set(`${layer}.mlp.up_proj.weight`, [m, h]);
    shapes.set(`${layer}.mlp.down_proj.weight`, [h, m]);
  }
  shapes.set('model.norm.weight', [h]);
  if (!config.tieWordEmbeddings) shapes.set('lm_head.weight', [v, h]);
  return shapes;
}

/** Stacks tensors along their first dimension; mixed dtypes are widened to float32 first. */
function concatRows(parts: HostTensor[]): HostTensor {
  const shape = [parts.reduce((rows, t) => rows + t.shape[0], 0), ...parts[0].shape.slice(1)];
  const dtype = parts[0].dtype;
  if (parts.some((t) => t.dtype !== dtype)) {
    const widened = parts.map(hostTensorToFloat32);
    const values = new Float32Array(widened.reduce((n, w) => n + w.length, 0));
    let offset = 0;
    for (const w of widened) {
      values.set(w, offset);
      offset += w.length;
    }
    return { dtype: 'f32', shape, data: new Uint8Array(values.buffer) };
  }
  const data = new Uint8Array(parts.reduce((n, t) => n + t.data.length, 0));
  let offset = 0;
  for (const t of parts) {
    data.set(t.data, offset);
    offset += t.data.length;
  }
  return { dtype, shape, data };
}
