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
 * them). A linear a pass does not record (CalibrationOptions.records) is listed with no
 * statistics: a null Hessian and mean, and no tokens; a statistic a pass was not asked for
 * (CalibrationOptions.statistics) stays null too.
 */
export interface LinearInputs {
  names: string[];
  cols: number;
  hessian: Hessian | null;
  meanAbs: Float64Array | null;
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
  /** Record only the linears whose first weight is named here; the others are listed unrecorded. Default: every linear. */
  records?: ReadonlySet<string>;
  /**
   * The statistics recorded beside the sampled rows (default both): the Hessians (GPTQ, vq) and
   * the mean |x| of each input channel (AWQ). One not asked for stays null: on the GPU a stack of
   * Hessians outweighs the model, and the mean needs every input row on the host.
   */
  statistics?: { hessian: boolean; meanAbs: boolean };
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
  const statistics = options.statistics ?? { hessian: true, meanAbs: true };
  const backend = device.newBackend((x, weight) => {
    if (!recorded.has(weight) || (last !== null && last[0] === x && last[1] === weight)) return;
    last = [x, weight];
    const entry = inputs.get(weight)!;
    const { cols } = entry;
    const n = x.shape[0];
    // Every row on the host only where something needs them (the CPU's Hessian, the mean); the
    // sampled rows alone otherwise.
    let host: Float32Array | null = null;
    const readHost = () => (host ??= backend.toHost(x));
    if (statistics.hessian) entry.hessian = device.accumulateHessian(entry.hessian, x, readHost);
    if (statistics.meanAbs) {
      const all = readHost();
      const meanAbs = (entry.meanAbs ??= new Float64Array(cols));
      for (let t = 0; t < n; t++) for (let c = 0; c < cols; c++) meanAbs[c] += Math.abs(all[t * cols + c]);
    }
    const kept: number[] = [];
    for (let t = 0; t < n; t++) if ((seen + t) % sampleEvery === 0) kept.push(t);
    if (kept.length > 0) {
      const sample = new Float32Array((entry.sampleRows + kept.length) * cols);
      sample.set(entry.sample);
      sample.set(backend.toHost(backend.gatherRows(x, Int32Array.from(kept))), entry.sampleRows * cols);
      entry.sample = sample;
    }
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
    const uploader: WeightUploader = {
      loadWeight: (t, loadOptions) => {
        const tensor = backend.loadWeight(t, loadOptions);
        if (pending.length > 0) {
          inputs.set(tensor, { names: pending, cols: tensor.shape[1], hessian: null, meanAbs: null, sample: new Float32Array(0), sampleRows: 0, tokens: 0 });
          if (options.records === undefined || options.records.has(pending[0])) recorded.add(tensor);
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
  for (const { meanAbs, tokens } of linears) meanAbs?.forEach((v, c) => (meanAbs[c] = v / tokens));
  return linears;
}

/**
 * GPTQ layer by layer, as AutoGPTQ runs it: a decoder layer's linears are calibrated on the inputs
 * the model gives them with every layer before already quantized (their dequantized weights in
 * place of the checkpoint's), so each layer's GPTQ also corrects for the error that reaches it.
 * One calibration pass per decoder layer, recording that layer alone; within a layer every linear
 * sees the 16-bit layer's inputs. With `trueSequential` (AutoGPTQ's `true_sequential`) the unit is
 * the linear instead: o_proj is calibrated with q/k/v quantized, gate/up with the attention
 * quantized, down_proj with gate/up quantized (one pass per linear).
 */
export class SequentialCalibration {
  private readonly dequantized = new Map<string, Float32Array>();
  private readonly recalibrate: (replaced: ReadonlyMap<string, Float32Array>, records: ReadonlySet<string>) => LinearInputs[];
  private readonly unitOf: (linear: LinearInputs) => string;
  private readonly units = new Map<string, Set<string>>();
  private current: LinearInputs[] = [];
  private currentUnit: string | null = null;

  /** `linears`: every linear, in load order; `recalibrate` runs a pass recording the linears whose first weights are named. */
  constructor(linears: LinearInputs[], recalibrate: (replaced: ReadonlyMap<string, Float32Array>, records: ReadonlySet<string>) => LinearInputs[], trueSequential: boolean) {
    this.recalibrate = recalibrate;
    this.unitOf = (l) => (trueSequential ? l.names[0] : decoderLayerOf(l.names[0]));
    for (const l of linears) {
      const unit = this.unitOf(l);
      if (!this.units.has(unit)) this.units.set(unit, new Set());
      this.units.get(unit)!.add(l.names[0]);
    }
  }

  /** The calibration record of `linear` with every unit before its own quantized. */
  inputsOf(linear: LinearInputs): LinearInputs {
    const unit = this.unitOf(linear);
    if (unit !== this.currentUnit) {
      this.release();
      const records = this.units.get(unit);
      if (records === undefined) throw new Error(`${linear.names[0]} was not among the calibrated linears`);
      this.current = this.recalibrate(this.dequantized, records);
      this.currentUnit = unit;
    }
    const found = this.current.find((l) => l.names[0] === linear.names[0]);
    if (found?.hessian == null) throw new Error(`calibration lost ${linear.names[0]} between passes`);
    return found;
  }

  /** Records a quantized part, which the next unit's calibration runs with. */
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
