import { join, resolve } from 'node:path';
import { readJsonFile } from '../checkpoint/json-file.ts';
import { type Checkpoint, openCheckpoint } from '../checkpoint/checkpoint.ts';
import type { SafetensorsTensor } from '../checkpoint/safetensors-writer.ts';
import { writeModelDirectory } from '../checkpoint/write-model-directory.ts';
import { invalidArgument } from '../errors.ts';
import { createModel, readModelArchitecture } from '../models/registry.ts';
import { float32ToHostTensor, hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import type { WeightDType } from '../tensor/host-tensor.ts';
import { AQLM_GROUP, aqlmLayout, dequantizeWeight, type AqlmFormat } from '../tensor/quantized-weight.ts';
import { awqClip, awqSearchScales, type AwqSearch } from './awq.ts';
import { calibrate, type LinearInputs, recordedHessian, SequentialCalibration } from './calibration.ts';
import { dequantizeGroups, quantizeRoundToNearestGroups, type GroupQuantized } from './group-quantizer.ts';
import { HostQuantizeDevice } from './host-quantize-device.ts';
import { packAqlm, packAwqGemm, packCompressedTensors, packGptq } from './pack.ts';
import type { QuantizeDevice } from './quantize-device.ts';
import { VQ_DEFAULTS, vqQuantize } from './vq.ts';

export type QuantizeMethod = 'gptq' | 'awq' | 'rtn' | 'vq';
export const QUANTIZE_METHODS: readonly QuantizeMethod[] = ['gptq', 'awq', 'rtn', 'vq'];

/** The checkpoint layouts an integer method writes: its own (GPTQ's for gptq and rtn, AutoAWQ's for awq) or compressed-tensors' pack-quantized. */
export type QuantizedLayout = 'gptq' | 'awq' | 'compressed-tensors';
export const QUANTIZED_LAYOUTS: readonly QuantizedLayout[] = ['gptq', 'awq', 'compressed-tensors'];

export interface QuantizeOptions {
  /** A 16-bit model directory. */
  model: string;
  method: QuantizeMethod;
  /** Code width of gptq, awq and rtn (vq codes 2 bits a weight in either AQLM layout). */
  bits: 4 | 8;
  /** vq: the AQLM layout written (default aqlm-2x8). */
  codebooks?: AqlmFormat;
  /** Input columns per group; null (`-1`) for one group per row. */
  groupSize: number | null;
  /** GPTQ: quantize columns by decreasing activation (`desc_act`). */
  actOrder: boolean;
  /** GPTQ: calibrate each linear with the ones before it in its decoder layer quantized (AutoGPTQ's `true_sequential`), not only the layers before. */
  trueSequential?: boolean;
  /** AWQ: clip each group's weights after scaling (awqClip; AutoAWQ's auto_clip). Off unless set: on keel-tiny it lowers the calibration error but raises held-out perplexity. */
  awqClip?: boolean;
  /** gptq, awq and rtn: the layout written; absent, the method's own (`defaultLayout`). */
  layout?: QuantizedLayout;
  /** Calibration token windows; rtn needs none (given, they only measure its error). */
  samples: number[][];
  output: string;
  /** Told a line at each stage that takes time (calibrated, each AWQ scale search, each linear quantized): a run takes minutes on a GPU, hours on a CPU. */
  progress?: (line: string) => void;
}

/**
 * One quantized layer's output error Σ‖x (W − Ŵ)ᵀ‖² over the sampled calibration inputs
 * (calibration.ts SAMPLE_ROWS), beside round-to-nearest's on the same grid.
 */
export interface LayerReport {
  names: string[];
  error: number;
  rtnError: number;
  /** AWQ: the α its search chose. */
  alpha?: number;
  /** AWQ: how many (row, group)s its clipping clamped. */
  clippedGroups?: number;
}

/** Model types whose decoder layout AWQ's scale folding knows (llama's names, plain RMSNorm weights). */
const AWQ_MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'qwen3'];

/** The layout a method writes unless told: GPTQ's for gptq and rtn, AutoAWQ's for awq. */
export function defaultLayout(method: Exclude<QuantizeMethod, 'vq'>): QuantizedLayout {
  return method === 'awq' ? 'awq' : 'gptq';
}

/** The layout `o` writes: AQLM's (null) for vq, else the method's own or compressed-tensors. */
function chosenLayout(o: QuantizeOptions): QuantizedLayout | null {
  if (o.method === 'vq') {
    if (o.layout !== undefined) throw invalidArgument('vq writes AQLM\'s layout: --format is for gptq, awq and rtn');
    return null;
  }
  const own = defaultLayout(o.method);
  const layout = o.layout ?? own;
  if (layout !== own && layout !== 'compressed-tensors') throw invalidArgument(`--method ${o.method} writes its own layout (${own}) or compressed-tensors, not ${layout}`);
  return layout;
}

/**
 * `keel quantize`: quantizes the linear layers Keel runs quantized (attention and dense MLP
 * projections; embeddings, norms and the LM head stay 16-bit) and writes the checkpoint to
 * `output` with config.json's `quantization_config`, the other files of the model directory
 * copied: GPTQ's layout for `gptq` and `rtn` (symmetric, `checkpoint_format: gptq`), AutoAWQ's
 * GEMM layout for `awq` (4-bit, zero points), or for any of the three compressed-tensors'
 * pack-quantized layout (`layout`). docs/quantization.md says how each method works. `device`
 * runs the calibration passes, GPTQ and the output errors (the reports', AWQ's search's); AWQ's
 * round-to-nearest trials and clipping and vq run on the host either way.
 */
export function quantizeCheckpoint(o: QuantizeOptions, device: QuantizeDevice = new HostQuantizeDevice()): LayerReport[] {
  const architecture = readModelArchitecture(o.model);
  if (architecture.quantization !== null) throw invalidArgument(`${o.model} is already quantized (quant_method ${architecture.quantization.method}): keel quantize reads 16-bit checkpoints`);
  if (architecture.languageModelOnly) throw invalidArgument(`${o.model} is a vision-language checkpoint: keel quantize writes text-only ones, whose tensors are named as a causal LM's`);
  const layout = chosenLayout(o);
  if (o.method === 'awq' && o.bits !== 4) throw invalidArgument('AWQ writes the 4-bit GEMM layout: use --bits 4 with --method awq');
  const modelType = architecture.config.modelType;
  if (o.method === 'awq' && !AWQ_MODEL_TYPES.includes(modelType)) {
    throw invalidArgument(`AWQ folds its scales into the layers before each projection, which Keel knows for ${AWQ_MODEL_TYPES.join(', ')}, not model_type ${modelType}`);
  }
  if (o.groupSize !== null && !(Number.isInteger(o.groupSize) && o.groupSize > 0)) throw invalidArgument(`the group size must be a positive integer or -1 (got ${o.groupSize})`);
  if (resolve(o.output) === resolve(o.model)) throw invalidArgument('--output must be a new directory, not the model directory');
  const ckpt = openCheckpoint(o.model);
  let linears: LinearInputs[] = [];
  let sequential: SequentialCalibration | null = null;
  try {
    const newModel = () => createModel(architecture, Math.max(...o.samples.map((s) => s.length), 2));
    if ((o.method === 'gptq' || o.method === 'awq') && o.samples.length === 0) throw invalidArgument(`${o.method} needs calibration text`);
    // Without calibration (rtn), a two-token probe finds the layers; their errors then mean nothing.
    // GPTQ's passes record one unit each (SequentialCalibration); its first pass only lists the
    // linears. Each method asks for the statistics it uses.
    const statistics = { hessian: o.method === 'gptq' || o.method === 'vq', meanAbs: o.method === 'awq' };
    const started = performance.now();
    const progress = (line: string) => o.progress?.(`${line} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
    linears = calibrate(newModel(), ckpt, o.samples.length === 0 ? [[0, 0]] : o.samples, { device, statistics, records: o.method === 'gptq' ? new Set() : undefined });
    progress(`calibrated: ${linears.length} linears over ${o.samples.length} windows`);
    sequential = o.method === 'gptq' ? new SequentialCalibration(linears, (replaced, records) => calibrate(newModel(), ckpt, o.samples, { device, statistics, replaced, records }), o.trueSequential === true) : null;
    // AWQ folds its scales across linears, so it holds every weight at once; the other methods read
    // a linear's weights when they come to it (an 8B model's, all in float64, would take 56 GB).
    const read = (name: string) => Float64Array.from(hostTensorToFloat32(ckpt.read(name)));
    const weights = new Map<string, Float64Array>(o.method === 'awq' ? linears.flatMap((l) => l.names.map((n) => [n, read(n)] as const)) : []);
    const replaced = new Map<string, Float32Array>();
    const awq = o.method === 'awq' ? awqLayers(linears, weights, foldAwqScales(device, linears, weights, replaced, ckpt, { ...o, progress }), o) : new Map<LinearInputs, AwqLayer>();
    const tensors = new Map<string, SafetensorsTensor>();
    const reports: LayerReport[] = [];
    const done = (report: LayerReport) => {
      reports.push(report);
      progress(`quantized ${reports.length}/${linears.length} ${report.names.join(', ')}: output error ${report.error.toExponential(3)} (round to nearest ${report.rtnError.toExponential(3)})`);
    };
    for (const linear of linears) {
      const rows = linear.names.map((n) => ckpt.info(n).shape[0]);
      const parts = linear.names.map((n) => weights.get(n) ?? read(n));
      if (o.method === 'vq') {
        done(quantizeVq(device, linear, parts, rows, o.codebooks ?? 'aqlm-2x8', o.samples.length > 0, tensors));
        continue;
      }
      const stacked = concat(parts);
      const total = rows.reduce((a, b) => a + b, 0);
      const { quantized, report } = quantizeLinear(device, stacked, total, sequential?.inputsOf(linear) ?? linear, o, awq.get(linear) ?? null);
      done(report);
      let first = 0;
      linear.names.forEach((name, i) => {
        const part = sliceRows(quantized, first, rows[i]);
        sequential?.quantized(name, part);
        first += rows[i];
        const base = name.slice(0, -'.weight'.length);
        const packed = layout === 'compressed-tensors' ? packCompressedTensors(part, o.method !== 'awq') : layout === 'awq' ? packAwqGemm(part) : packGptq(part);
        for (const [key, t] of Object.entries(packed)) tensors.set(`${base}.${key}`, t);
      });
    }
    const quantizedNames = new Set(linears.flatMap((l) => l.names));
    for (const name of ckpt.tensorNames) {
      if (quantizedNames.has(name)) continue;
      const raw = ckpt.readRaw(name);
      const values = replaced.get(name);
      const data = values === undefined ? raw.data : float32ToHostTensor(values, raw.dtype.toLowerCase() as WeightDType, raw.shape).data;
      tensors.set(name, { dtype: raw.dtype, shape: raw.shape, data });
    }
    const config = readJsonFile(join(o.model, 'config.json')) as Record<string, unknown>;
    writeModelDirectory(o.model, o.output, tensors, { quantization_config: quantizationConfig(o, denseLinearWeights(tensors, config)) });
    return reports;
  } finally {
    ckpt.close();
    sequential?.release();
    for (const linear of linears) linear.hessian?.dispose();
  }
}

function quantizeLinear(device: QuantizeDevice, w: Float64Array, rows: number, linear: LinearInputs, o: QuantizeOptions, awq: AwqLayer | null): { quantized: GroupQuantized; report: LayerReport } {
  const { cols } = linear;
  const grid = { bits: o.bits, symmetric: o.method !== 'awq' };
  if (awq !== null) {
    // AWQ: the weight arrives scaled and clipped (foldAwqScales, awqLayers) and is rounded to
    // nearest; its error is against the scaled weight before clipping, on the inputs that weight
    // sees, which equals the error of the unscaled weight on the layer's own inputs.
    const quantized = quantizeRoundToNearestGroups(w, rows, cols, o.groupSize, grid);
    const unfolded = (m: Float64Array) => m.map((v, i) => v * awq.rowDivisors[Math.floor(i / cols)]);
    const error = device.outputError(awq.inputs, linear.sampleRows, unfolded(awq.reference), unfolded(dequantizeGroups(quantized)), rows, cols);
    const rtnError = awq.search?.unscaledError ?? device.outputError(awq.inputs, linear.sampleRows, unfolded(awq.reference), unfolded(dequantizeGroups(quantizeRoundToNearestGroups(awq.reference, rows, cols, o.groupSize, grid))), rows, cols);
    return { quantized, report: { names: linear.names, error, rtnError, alpha: awq.search?.alpha ?? 0, clippedGroups: awq.clippedGroups } };
  }
  const error = (q: GroupQuantized) => device.outputError(linear.sample, linear.sampleRows, w, dequantizeGroups(q), rows, cols);
  const rtn = quantizeRoundToNearestGroups(w, rows, cols, o.groupSize, grid);
  const rtnError = error(rtn);
  if (o.method === 'rtn') return { quantized: rtn, report: { names: linear.names, error: rtnError, rtnError } };
  const quantized = device.gptq(w, rows, cols, recordedHessian(linear), { ...grid, groupSize: o.groupSize, actOrder: o.actOrder, damp: 0.01 });
  return { quantized, report: { names: linear.names, error: error(quantized), rtnError } };
}

/**
 * vq: each part (q, k, v…) gets its own codebooks, as AQLM's QuantizedLinear has them, weighted by
 * the calibration inputs when there are some (vq.ts). The report's
 * round-to-nearest error is 2-bit round to nearest in groups of 128 (2.125 bits a weight and more),
 * the scalar format of about the same size.
 */
function quantizeVq(device: QuantizeDevice, linear: LinearInputs, weights: Float64Array[], rows: number[], format: AqlmFormat, calibrated: boolean, tensors: Map<string, SafetensorsTensor>): LayerReport {
  const { cols } = linear;
  // The calibration inputs' XᵀX, damped (VQ_DAMP); none: every column alike and independent.
  const hessian = calibrated ? dampedHessian(recordedHessian(linear).toHost(), cols) : null;
  if (cols % AQLM_GROUP !== 0) throw invalidArgument(`vq codes groups of ${AQLM_GROUP} input columns, and ${linear.names.join(', ')} has ${cols}`);
  const parts = linear.names.map((name, i) => {
    const q = vqQuantize(weights[i], rows[i], cols, { format, ...VQ_DEFAULTS, hessian });
    for (const [key, t] of Object.entries(packAqlm(q))) tensors.set(`${name.slice(0, -'.weight'.length)}.${key}`, t);
    return Float64Array.from(dequantizeWeight(q));
  });
  const total = rows.reduce((a, b) => a + b, 0);
  const stacked = concat(weights);
  const error = device.outputError(linear.sample, linear.sampleRows, stacked, concat(parts), total, cols);
  const rtn = dequantizeGroups(quantizeRoundToNearestGroups(stacked, total, cols, Math.min(128, cols), { bits: 2, symmetric: false }));
  return { names: linear.names, error, rtnError: device.outputError(linear.sample, linear.sampleRows, stacked, rtn, total, cols) };
}

/**
 * vq's XᵀX plus VQ_DAMP × its mean diagonal on the diagonal. Undamped, AQLM's search fits the
 * calibration inputs' weak directions too closely: on keel-tiny (16 windows of 256 tokens) its
 * held-out perplexity was 153.8 against k-means' 139.9; damped by 0.03, 0.1 and 0.3: 141.0,
 * 140.4 and 137.0 (docs/quantization.md).
 */
const VQ_DAMP = 0.3;

function dampedHessian(h: Float64Array, cols: number): Float64Array {
  const out = h.slice();
  let mean = 0;
  for (let c = 0; c < cols; c++) mean += h[c * cols + c] / cols;
  for (let c = 0; c < cols; c++) out[c * cols + c] += VQ_DAMP * mean;
  return out;
}

/**
 * AWQ: searches each layer's input-channel scales s and folds them into the model so that its
 * function is unchanged: the weight's columns × s, and the op before ÷ s: the RMSNorm before
 * q/k/v (input_layernorm) and before gate/up (post_attention_layernorm), and up_proj's rows before
 * down_proj (act(gate) · up feeds down channel by channel), and v_proj's rows (and bias) before
 * o_proj when every query head has its own kv head: attention mixes each value channel over the
 * keys alone, so o_proj's input channel c is v_proj's output channel c times a constant per
 * token. With grouped kv heads a value channel feeds several of o_proj's inputs, which one scale
 * each cannot follow: o_proj then keeps s = 1, as AutoAWQ leaves it.
 */
export function foldAwqScales(
  device: QuantizeDevice,
  linears: LinearInputs[],
  weights: Map<string, Float64Array>,
  replaced: Map<string, Float32Array>,
  checkpoint: Pick<Checkpoint, 'read' | 'has'>,
  o: QuantizeOptions,
): AwqFolds {
  const grid = { bits: o.bits, symmetric: false };
  const searches = new Map<LinearInputs, AwqSearch>();
  const rowDivisors = new Map<string, Float64Array>();
  for (const linear of linears) {
    const { names, cols } = linear;
    const last = names[names.length - 1];
    const layer = last.replace(/\.(self_attn|mlp)\.[a-z_]+\.weight$/, '');
    let before: { kind: 'norm'; name: string } | { kind: 'rows'; name: string } | null;
    if (/self_attn\.v_proj\.weight$/.test(last)) before = { kind: 'norm', name: `${layer}.input_layernorm.weight` };
    else if (/mlp\.up_proj\.weight$/.test(last)) before = { kind: 'norm', name: `${layer}.post_attention_layernorm.weight` };
    else if (/mlp\.down_proj\.weight$/.test(last)) before = { kind: 'rows', name: `${layer}.mlp.up_proj.weight` };
    else if (/self_attn\.o_proj\.weight$/.test(last)) {
      const v = `${layer}.self_attn.v_proj.weight`;
      before = weights.get(v)!.length / cols === cols ? { kind: 'rows', name: v } : null;
    }
    else throw invalidArgument(`AWQ does not know which layer feeds ${names.join(', ')}`);
    if (before === null) continue;
    const rowsOf = names.map((n) => weights.get(n)!.length / cols);
    const total = rowsOf.reduce((a, b) => a + b, 0);
    const stacked = concat(names.map((n) => weights.get(n)!));
    if (linear.meanAbs === null) throw new Error(`calibration did not record ${names[0]}'s mean inputs`);
    const search = awqSearchScales(stacked, total, cols, linear.meanAbs, o.groupSize, grid, (approx) => device.outputError(linear.sample, linear.sampleRows, stacked, approx, total, cols));
    for (const n of names) {
      const w = weights.get(n)!;
      for (let r = 0; r < w.length / cols; r++) for (let c = 0; c < cols; c++) w[r * cols + c] *= search.scales[c];
    }
    if (before.kind === 'norm') {
      const norm = replaced.get(before.name) ?? hostTensorToFloat32(checkpoint.read(before.name));
      replaced.set(before.name, norm.map((v, c) => v / search.scales[c]));
    } else {
      const up = weights.get(before.name)!;
      const upCols = up.length / cols;
      for (let r = 0; r < cols; r++) for (let c = 0; c < upCols; c++) up[r * upCols + c] /= search.scales[r];
      const bias = before.name.replace(/\.weight$/, '.bias');
      if (checkpoint.has(bias)) replaced.set(bias, (replaced.get(bias) ?? hostTensorToFloat32(checkpoint.read(bias))).map((v, r) => v / search.scales[r]));
      rowDivisors.set(before.name, search.scales);
    }
    searches.set(linear, search);
    o.progress?.(`AWQ scales ${searches.size}: ${names.join(', ')}, alpha ${search.alpha}`);
  }
  return { searches, rowDivisors };
}

/** AWQ's scales: each searched linear's, and the weights whose rows absorbed the next one's (up_proj's, divided by down_proj's scales; v_proj's by o_proj's). */
export interface AwqFolds {
  searches: Map<LinearInputs, AwqSearch>;
  rowDivisors: Map<string, Float64Array>;
}

/**
 * What AWQ did to one linear: its scale search (none for o_proj under grouped kv heads), its sampled inputs as the
 * scaled weight sees them (x / s), its scaled weight before clipping (what the report's error is
 * measured against), the divisor each of its rows took from the next layer's scales (1 but for
 * up_proj's; the error is measured with them multiplied back, in the units the search saw), and
 * how many (row, group)s the clipping clamped.
 */
interface AwqLayer {
  search: AwqSearch | null;
  inputs: Float32Array;
  reference: Float64Array;
  rowDivisors: Float64Array;
  clippedGroups: number;
}

/**
 * Each linear's AWQ record, with `awqClip` its clipping (awqClip) done, once every scale is
 * folded, as AutoAWQ clips a block after scaling it: every part of every linear except q_proj and
 * k_proj, whose errors pass through the attention's softmax, which a layer's own output error
 * does not see (AutoAWQ leaves them too).
 */
function awqLayers(linears: LinearInputs[], weights: Map<string, Float64Array>, folds: AwqFolds, o: QuantizeOptions): Map<LinearInputs, AwqLayer> {
  const grid = { bits: o.bits, symmetric: false };
  const layers = new Map<LinearInputs, AwqLayer>();
  for (const linear of linears) {
    const { names, cols, sample, sampleRows } = linear;
    const search = folds.searches.get(linear) ?? null;
    const inputs = search === null ? sample : sample.map((v, i) => v / search.scales[i % cols]);
    const reference = concat(names.map((n) => weights.get(n)!));
    const rowDivisors = concat(names.map((n) => folds.rowDivisors.get(n) ?? new Float64Array(weights.get(n)!.length / cols).fill(1)));
    let clippedGroups = 0;
    for (const name of names) {
      if (o.awqClip !== true || /\.(q_proj|k_proj)\.weight$/.test(name)) continue;
      clippedGroups += awqClip(weights.get(name)!, cols, inputs, sampleRows, o.groupSize, grid);
    }
    layers.set(linear, { search, inputs, reference, rowDivisors, clippedGroups });
  }
  return layers;
}

function concat(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function sliceRows(q: GroupQuantized, first: number, count: number): GroupQuantized {
  const groups = q.scales.length / q.rows;
  return {
    ...q,
    rows: count,
    codes: q.codes.slice(first * q.cols, (first + count) * q.cols),
    scales: q.scales.slice(first * groups, (first + count) * groups),
    zeros: q.zeros.slice(first * groups, (first + count) * groups),
  };
}

/**
 * The 2-D weights left 16-bit (embeddings, the LM head, tied or not), each as its weight path
 * (what AQLM's own checkpoints list, and transformers 4 matches) and its module name (what
 * transformers 5 matches).
 */
function denseLinearWeights(tensors: Map<string, SafetensorsTensor>, config: Record<string, unknown>): string[] {
  const names = [...tensors].filter(([name, t]) => name.endsWith('.weight') && t.shape.length === 2 && (t.dtype === 'BF16' || t.dtype === 'F16' || t.dtype === 'F32')).map(([name]) => name);
  if (config.tie_word_embeddings === true && !names.includes('lm_head.weight')) names.push('lm_head.weight');
  return names.flatMap((name) => [name, name.slice(0, -'.weight'.length)]);
}

/** config.json's quantization_config, as AutoGPTQ / AutoAWQ / llm-compressor write it (and transformers, vLLM and Keel read it). */
function quantizationConfig(o: QuantizeOptions, dense: string[]): Record<string, unknown> {
  const groupSize = o.groupSize ?? -1;
  const meta = { quantizer: [`keel quantize --method ${o.method}`] };
  if (o.method !== 'vq' && o.layout === 'compressed-tensors') return compressedTensorsConfig(o);
  if (o.method === 'vq') {
    const { codebooks, bits } = aqlmLayout(o.codebooks ?? 'aqlm-2x8');
    // transformers replaces every nn.Linear not listed here by AQLM's QuantizedLinear.
    return { quant_method: 'aqlm', in_group_size: AQLM_GROUP, out_group_size: 1, num_codebooks: codebooks, nbits_per_codebook: bits, linear_weights_not_to_quantize: dense, meta };
  }
  if (o.method === 'awq') return { quant_method: 'awq', bits: 4, group_size: groupSize, zero_point: true, version: 'gemm', modules_to_not_convert: null, meta };
  return {
    quant_method: 'gptq',
    bits: o.bits,
    group_size: groupSize,
    desc_act: o.method === 'gptq' && o.actOrder,
    sym: true,
    checkpoint_format: 'gptq',
    damp_percent: 0.01,
    static_groups: false,
    true_sequential: o.method === 'gptq' && o.trueSequential === true,
    meta,
  };
}

/**
 * compressed-tensors' quantization_config for a pack-quantized checkpoint: one config group over
 * every Linear module (the LM head ignored, as llm-compressor's recipes leave it), integer weights
 * of `bits`, symmetric except AWQ's, per group of input columns (or per output channel with one
 * group a row), GPTQ's act-order as `actorder: group` (its `weight_g_idx`).
 */
function compressedTensorsConfig(o: QuantizeOptions): Record<string, unknown> {
  const weights = {
    num_bits: o.bits,
    type: 'int',
    symmetric: o.method !== 'awq',
    strategy: o.groupSize === null ? 'channel' : 'group',
    group_size: o.groupSize,
    actorder: o.method === 'gptq' && o.actOrder ? 'group' : null,
    dynamic: false,
    observer: 'minmax',
  };
  return {
    quant_method: 'compressed-tensors',
    format: 'pack-quantized',
    quantization_status: 'compressed',
    config_groups: { group_0: { targets: ['Linear'], weights, input_activations: null, output_activations: null } },
    ignore: ['lm_head'],
    kv_cache_scheme: null,
    quantizer: `keel quantize --method ${o.method}`,
  };
}
