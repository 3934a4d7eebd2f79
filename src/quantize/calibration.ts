import type { Tensor } from '../backend/backend.ts';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { invalidArgument } from '../errors.ts';
import type { WeightSource, WeightUploader } from '../layers/parameters.ts';
import type { CausalLM } from '../models/causal-lm.ts';
import { describeBatch } from '../step/batch.ts';
import { float32Tensor } from '../tensor/host-ops.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { dequantizeGroups, type GroupQuantized } from './group-quantizer.ts';
import { HostQuantizeDevice } from './host-quantize-device.ts';
import type { Hessian, QuantizeDevice } from './quantize-device.ts';

/**
 * What calibration saw at the input of one linear layer: the checkpoint weights stacked into it
 * (q/k/v, gate/up, or one), H = XᵀX over every calibration token's input row x, the mean |x| of
 * each input channel, and a sample of the rows themselves (AWQ's search measures output errors on
 * them). A linear outside the decoder layer a pass records (CalibrationOptions.layer) is listed
 * with no statistics: a null Hessian and no tokens.
 */
export interface LinearInputs {
  names: string[];
  cols: number;
  hessian: Hessian | null;
  meanAbs: Float64Array;
  /** Sampled input rows [sampleRows, cols]. */
  sample: Float32Array;
  sampleRows: number;
  tokens: number;
}

/** The Hessian of a linear a pass recorded (a wiring bug otherwise). */
export function recordedHessian(linear: LinearInputs): Hessian {
  if (linear.hessian === null) throw new Error(`calibration did not record ${linear.names[0]}'s inputs`);
  return linear.hessian;
}

/**
 * Input rows kept per layer (every k-th calibration token, about this many): AWQ's search and the
 * error reports measure output errors on them, at a cost of rows × cols multiply-adds each.
 */
export const SAMPLE_ROWS = 128;

export interface CalibrationOptions {
  /** Where the passes run (default: the CPU). */
  device?: QuantizeDevice;
  /** Weights (float32, the checkpoint's shapes) standing in for the checkpoint's. */
  replaced?: ReadonlyMap<string, Float32Array>;
  /**
   * Record only the linears of this decoder layer (its index among the decoder layers, in load
   * order); the others are listed unrecorded. Default: every linear.
   */
  layer?: number;
}

/**
 * Loads `model` from a 16-bit checkpoint on a fresh backend of `device` and runs the calibration
 * samples through it, one prefill each, recording the inputs of every quantizable linear layer
 * (those a quantized checkpoint stores quantized: the source's `readLinear`). Returns them in load
 * order, with mean |x| averaged over the tokens. `replaced` weights stand in for the checkpoint's:
 * GPTQ's layers already quantized, so that the layers after them see the inputs the quantized
 * model gives them.
 */
export function calibrate(model: CausalLM, ckpt: Checkpoint, samples: readonly number[][], options: CalibrationOptions = {}): LinearInputs[] {
  if (samples.length === 0) throw invalidArgument('calibration needs at least one sample of tokens');
  const device = options.device ?? new HostQuantizeDevice();
  const replaced = options.replaced ?? new Map<string, Float32Array>();
  const inputs = new Map<Tensor, LinearInputs>();
  const recorded = new Set<Tensor>();
  const totalTokens = samples.reduce((n, s) => n + s.length, 0);
  const sampleEvery = Math.max(1, Math.floor(totalTokens / SAMPLE_ROWS));
  let seen = 0;
  let last: [Tensor, Tensor] | null = null;
  const backend = device.newBackend((x, weight) => {
    if (!recorded.has(weight) || (last !== null && last[0] === x && last[1] === weight)) return;
    last = [x, weight];
    const entry = inputs.get(weight)!;
    const { cols } = entry;
    const host = backend.toHost(x);
    const n = host.length / cols;
    entry.hessian = device.accumulateHessian(entry.hessian, x, host, cols);
    for (let t = 0; t < n; t++) for (let c = 0; c < cols; c++) entry.meanAbs[c] += Math.abs(host[t * cols + c]);
    const kept: number[] = [];
    for (let t = 0; t < n; t++) if ((seen + t) % sampleEvery === 0) kept.push(t);
    const sample = new Float32Array((entry.sampleRows + kept.length) * cols);
    sample.set(entry.sample);
    kept.forEach((t, i) => sample.set(host.subarray(t * cols, (t + 1) * cols), (entry.sampleRows + i) * cols));
    entry.sample = sample;
    entry.sampleRows += kept.length;
    entry.tokens += n;
  });
  try {
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
    const layers: string[] = [];
    const uploader: WeightUploader = {
      loadWeight: (t, loadOptions) => {
        const tensor = backend.loadWeight(t, loadOptions);
        if (pending.length > 0) {
          const layer = decoderLayerOf(pending[0]);
          if (!layers.includes(layer)) layers.push(layer);
          inputs.set(tensor, { names: pending, cols: tensor.shape[1], hessian: null, meanAbs: new Float64Array(tensor.shape[1]), sample: new Float32Array(0), sampleRows: 0, tokens: 0 });
          if (options.layer === undefined || layers.indexOf(layer) === options.layer) recorded.add(tensor);
        }
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
    for (const tokens of samples) {
      model.forward(backend, backend.beginStep(describeBatch([{ tokens, startPos: 0, blockTables: [blockTable] }], blockSize)), cache);
      seen += tokens.length;
    }
  } finally {
    backend.dispose();
  }
  const linears = [...inputs.values()];
  for (const entry of linears) for (let c = 0; c < entry.cols && entry.tokens > 0; c++) entry.meanAbs[c] /= entry.tokens;
  return linears;
}

/**
 * GPTQ layer by layer, as AutoGPTQ runs it: a decoder layer's linears are calibrated on the inputs
 * the model gives them with every layer before already quantized (their dequantized weights in
 * place of the checkpoint's), so each layer's GPTQ also corrects for the error that reaches it.
 * One calibration pass per decoder layer, recording that layer alone (the first is the 16-bit
 * model's, given); within a layer, every linear sees the 16-bit layer's inputs (AutoGPTQ's
 * `true_sequential` goes further).
 */
export class SequentialCalibration {
  private readonly dequantized = new Map<string, Float32Array>();
  private readonly recalibrate: (replaced: ReadonlyMap<string, Float32Array>, layer: number) => LinearInputs[];
  private readonly layers: string[];
  private current: LinearInputs[];
  private currentLayer = 0;

  /** `first`: every linear, the first decoder layer's recorded (calibrate's `layer` 0); `recalibrate` runs a pass recording `layer`. */
  constructor(first: LinearInputs[], recalibrate: (replaced: ReadonlyMap<string, Float32Array>, layer: number) => LinearInputs[]) {
    this.current = first;
    this.recalibrate = recalibrate;
    this.layers = [...new Set(first.map((l) => decoderLayerOf(l.names[0])))];
  }

  /** The calibration record of `linear` with every layer before its own quantized. */
  inputsOf(linear: LinearInputs): LinearInputs {
    const layer = this.layers.indexOf(decoderLayerOf(linear.names[0]));
    if (layer !== this.currentLayer) {
      this.release();
      this.current = this.recalibrate(this.dequantized, layer);
      this.currentLayer = layer;
    }
    const found = this.current.find((l) => l.names[0] === linear.names[0]);
    if (found?.hessian == null) throw new Error(`calibration lost ${linear.names[0]} between passes`);
    return found;
  }

  /** Records a quantized part, which the next layer's calibration runs with. */
  quantized(name: string, part: GroupQuantized): void {
    this.dequantized.set(name, Float32Array.from(dequantizeGroups(part)));
  }

  /** Frees the latest pass's Hessians. */
  release(): void {
    for (const l of this.current) l.hessian?.dispose();
    this.current = [];
  }
}

/** The decoder layer a weight belongs to (`model.layers.3.self_attn.q_proj.weight`: `model.layers.3`), or the name itself outside one. */
function decoderLayerOf(name: string): string {
  return /^(.*?\.layers\.\d+)\./.exec(name)?.[1] ?? name;
}
