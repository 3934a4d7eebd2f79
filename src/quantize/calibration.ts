import type { Tensor } from '../backend/backend.ts';
import { CpuBackend } from '../backend/cpu/cpu-backend.ts';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { invalidArgument } from '../errors.ts';
import type { WeightSource, WeightUploader } from '../layers/parameters.ts';
import type { CausalLM } from '../models/causal-lm.ts';
import { describeBatch } from '../step/batch.ts';
import { float32Tensor } from '../tensor/host-ops.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { hessianOf } from './gptq.ts';
import { dequantizeGroups, type GroupQuantized } from './group-quantizer.ts';

/**
 * What calibration saw at the input of one linear layer: the checkpoint weights stacked into it
 * (q/k/v, gate/up, or one), H = XᵀX over every calibration token's input row x, the mean |x| of
 * each input channel, and a sample of the rows themselves (AWQ's search measures output errors on
 * them).
 */
export interface LinearInputs {
  names: string[];
  cols: number;
  hessian: Float64Array;
  meanAbs: Float64Array;
  /** Sampled input rows [sampleRows, cols]. */
  sample: Float32Array;
  sampleRows: number;
  tokens: number;
}

/**
 * Input rows kept per layer (every k-th calibration token, about this many): AWQ's search and the
 * error reports measure output errors on them, at a cost of rows × cols multiply-adds each.
 */
export const SAMPLE_ROWS = 128;

/**
 * The CPU backend, recording the input of every `linear` whose weight is a quantizable layer's
 * (gatedLinear multiplies through `linear`, so gate/up inputs are seen too).
 */
class CalibrationBackend extends CpuBackend {
  readonly namesOf = new Map<Tensor, string[]>();
  readonly inputs = new Map<Tensor, LinearInputs>();
  sampleEvery = 1;
  private seen = 0;

  override linear(x: Tensor, weight: Tensor, bias: Tensor | null, options?: { float32?: boolean }): Tensor {
    const names = this.namesOf.get(weight);
    if (names !== undefined) this.record(weight, names, this.toHost(x), weight.shape[1]);
    return super.linear(x, weight, bias, options);
  }

  /** Starts a calibration sample: token indices (for sampling rows) count from `first`. */
  beginSample(first: number): void {
    this.seen = first;
  }

  private record(weight: Tensor, names: string[], x: Float32Array, cols: number): void {
    let entry = this.inputs.get(weight);
    if (entry === undefined) {
      entry = { names, cols, hessian: new Float64Array(cols * cols), meanAbs: new Float64Array(cols), sample: new Float32Array(0), sampleRows: 0, tokens: 0 };
      this.inputs.set(weight, entry);
    }
    const n = x.length / cols;
    const h = hessianOf(x, n, cols);
    for (let i = 0; i < h.length; i++) entry.hessian[i] += h[i];
    for (let t = 0; t < n; t++) for (let c = 0; c < cols; c++) entry.meanAbs[c] += Math.abs(x[t * cols + c]);
    const kept: number[] = [];
    for (let t = 0; t < n; t++) if ((this.seen + t) % this.sampleEvery === 0) kept.push(t);
    const sample = new Float32Array((entry.sampleRows + kept.length) * cols);
    sample.set(entry.sample);
    kept.forEach((t, i) => sample.set(x.subarray(t * cols, (t + 1) * cols), (entry.sampleRows + i) * cols));
    entry.sample = sample;
    entry.sampleRows += kept.length;
    entry.tokens += n;
  }
}

/**
 * Loads `model` from a 16-bit checkpoint on the CPU backend and runs the calibration samples
 * through it, one prefill each, recording the inputs of every quantizable linear layer (those a
 * quantized checkpoint stores quantized: the source's `readLinear`). Returns them in load order,
 * with mean |x| averaged over the tokens. `replaced` weights (float32, the checkpoint's shapes)
 * stand in for the checkpoint's: GPTQ's layers already quantized, so that the layers after them
 * see the inputs the quantized model gives them.
 */
export function calibrate(model: CausalLM, ckpt: Checkpoint, samples: readonly number[][], replaced: ReadonlyMap<string, Float32Array> = new Map()): LinearInputs[] {
  if (samples.length === 0) throw invalidArgument('calibration needs at least one sample of tokens');
  const backend = new CalibrationBackend();
  const totalTokens = samples.reduce((n, s) => n + s.length, 0);
  backend.sampleEvery = Math.max(1, Math.floor(totalTokens / SAMPLE_ROWS));
  // A linear layer reads its parts with readLinear, then uploads them stacked with one loadWeight:
  // the names read since the last upload are that weight's.
  let pending: string[] = [];
  const read = (name: string): HostTensor => {
    const values = replaced.get(name);
    return values === undefined ? ckpt.read(name) : float32Tensor(values, ckpt.info(name).shape);
  };
  const source: WeightSource = {
    read,
    readLinear: (name) => {
      pending.push(name);
      return read(name);
    },
  };
  const uploader: WeightUploader = {
    loadWeight: (t, options) => {
      const tensor = backend.loadWeight(t, options);
      if (pending.length > 0) backend.namesOf.set(tensor, pending);
      pending = [];
      return tensor;
    },
    loadQuantizedWeight: (w) => backend.loadQuantizedWeight(w),
    loadSparseWeight: (w) => backend.loadSparseWeight(w),
    loadMxfp4Weight: (w) => backend.loadMxfp4Weight(w),
    loadQuantizedExperts: (w, count) => backend.loadQuantizedExperts(w, count),
    uploadRopeTable: (table) => backend.uploadRopeTable(table),
  };
  model.load(source, uploader);
  const blockSize = 16;
  const longest = samples.reduce((m, s) => Math.max(m, s.length), 0);
  const blocks = Math.ceil(longest / blockSize);
  const cache = backend.createKvCache({ numBlocks: blocks, blockSize, layers: model.kvLayers });
  const blockTable = Array.from({ length: blocks }, (_, i) => i);
  let first = 0;
  for (const tokens of samples) {
    backend.beginSample(first);
    model.forward(backend, backend.beginStep(describeBatch([{ tokens, startPos: 0, blockTables: [blockTable] }], blockSize)), cache);
    first += tokens.length;
  }
  const inputs = [...backend.inputs.values()];
  for (const entry of inputs) for (let c = 0; c < entry.cols; c++) entry.meanAbs[c] /= entry.tokens;
  return inputs;
}

/**
 * GPTQ layer by layer, as AutoGPTQ runs it: a decoder layer's linears are calibrated on the inputs
 * the model gives them with every layer before already quantized (their dequantized weights in
 * place of the checkpoint's), so each layer's GPTQ also corrects for the error that reaches it.
 * One calibration pass per decoder layer (the first is the 16-bit model's); within a layer, every
 * linear sees the 16-bit layer's inputs (AutoGPTQ's `true_sequential` goes further).
 */
export class SequentialCalibration {
  private readonly dequantized = new Map<string, Float32Array>();
  private readonly recalibrate: (replaced: ReadonlyMap<string, Float32Array>) => LinearInputs[];
  private current: LinearInputs[];
  private currentLayer: string | null = null;
  private stale = false;

  constructor(first: LinearInputs[], recalibrate: (replaced: ReadonlyMap<string, Float32Array>) => LinearInputs[]) {
    this.current = first;
    this.recalibrate = recalibrate;
  }

  /** The calibration record of `linear` with every layer before its own quantized. */
  inputsOf(linear: LinearInputs): LinearInputs {
    const layer = decoderLayerOf(linear.names[0]);
    if (layer !== this.currentLayer) {
      if (this.stale) this.current = this.recalibrate(this.dequantized);
      this.currentLayer = layer;
      this.stale = false;
    }
    const found = this.current.find((l) => l.names[0] === linear.names[0]);
    if (found === undefined) throw new Error(`calibration lost ${linear.names[0]} between passes`);
    return found;
  }

  /** Records a quantized part, which the next layer's calibration runs with. */
  quantized(name: string, part: GroupQuantized): void {
    this.dequantized.set(name, Float32Array.from(dequantizeGroups(part)));
    this.stale = true;
  }
}

/** The decoder layer a weight belongs to (`model.layers.3.self_attn.q_proj.weight`: `model.layers.3`), or the name itself outside one. */
function decoderLayerOf(name: string): string {
  return /^(.*?\.layers\.\d+)\./.exec(name)?.[1] ?? name;
}
