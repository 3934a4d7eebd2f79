import { Presets, SingleBar } from 'cli-progress';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { invalidModel } from '../errors.ts';
import type { Layer, TensorParallelShard, WeightSource, WeightUploader } from '../layers/parameters.ts';

export interface LoadProgress {
  /** Called after each checkpoint tensor is read; `total` counts the tensors the model uses. */
  onProgress?(done: number, total: number): void;
  /** The tensor-parallel shard to load (layers/shard.ts); absent: all of the model. */
  shard?: TensorParallelShard;
}

/**
 * Loads a model's layers from a checkpoint. Every tensor the layers name is checked against the
 * shape their config implies before any data is read. Tensors no layer names (a tied checkpoint's
 * `lm_head.weight`, old `rotary_emb.inv_freq` buffers) are ignored.
 */
export function loadWeights(model: Layer, ckpt: Checkpoint, uploader: WeightUploader, opts: LoadProgress = {}): void {
  const expected = model.parameters();
  for (const { name, shape, orShape } of expected) {
    if (!ckpt.has(name)) throw invalidModel(`checkpoint ${ckpt.dir} is missing tensor "${name}" (expected shape [${shape.join(', ')}])`);
    const actual = ckpt.info(name).shape;
    if (!sameShape(actual, shape) && !(orShape && sameShape(actual, orShape))) {
      const implied = [shape, ...(orShape ? [orShape] : [])].map((s) => `[${s.join(', ')}]`).join(' or ');
      throw invalidModel(`checkpoint ${ckpt.dir}: tensor "${name}" has shape [${actual.join(', ')}] but config.json implies ${implied}`);
    }
  }
  let done = 0;
  const counted = <T>(t: T): T => {
    opts.onProgress?.(++done, expected.length);
    return t;
  };
  const readLinear = ckpt.readLinear?.bind(ckpt);
  const readSlice = ckpt.readSlice?.bind(ckpt);
  const source: WeightSource = { read: (name) => counted(ckpt.read(name)), readOptional: (name) => (ckpt.has(name) ? ckpt.read(name) : null) };
  if (readLinear) source.readLinear = (name) => counted(readLinear(name));
  const readVocabulary = ckpt.readVocabulary?.bind(ckpt);
  if (readVocabulary) source.readVocabulary = (name) => counted(readVocabulary(name));
  if (readSlice) source.readSlice = (name, slice) => counted(readSlice(name, slice));
  if (opts.shard) source.shard = opts.shard;
  const readMxfp4 = ckpt.readMxfp4?.bind(ckpt);
  if (readMxfp4) {
    source.readMxfp4 = (name) => {
      const w = readMxfp4(name);
      return w === null ? null : counted(w);
    };
  }
  if (ckpt.expertQuantization) source.expertQuantization = ckpt.expertQuantization;
  if (ckpt.quantizeLinear) source.quantizeLinear = ckpt.quantizeLinear.bind(ckpt);
  model.load(source, uploader);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * `loadWeights` with a progress bar on stderr (when it is a terminal and `showProgress` is set);
 * closes the checkpoint when done.
 */
export function loadWeightsWithProgress(model: Layer, ckpt: Checkpoint, uploader: WeightUploader, options: { showProgress: boolean; shard?: TensorParallelShard }): void {
  const bar =
    options.showProgress && process.stderr.isTTY
      ? new SingleBar({ stream: process.stderr, format: 'loading weights [{bar}] {value}/{total} tensors {duration}s', hideCursor: true }, Presets.shades_classic)
      : null;
  try {
    const onProgress = bar ? (done: number, total: number) => (done === 1 ? bar.start(total, done) : bar.update(done)) : undefined;
    loadWeights(model, ckpt, uploader, { onProgress, ...(options.shard && { shard: options.shard }) });
  } finally {
    bar?.stop();
    ckpt.close();
  }
}
