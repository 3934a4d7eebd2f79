import { isGgufPath } from '../checkpoint/model-files.ts';
import { DEFAULT_MODEL_DIR } from '../engine/load-engine.ts';
import { invalidArgument } from '../errors.ts';
import { locateModel } from '../model-source/locate-model.ts';
import { selectQuantizeDevice } from '../quantize/select-quantize-device.ts';
import { collectEnvironment, modelFreeRun } from '../bench/run-environment.ts';
import { writeResult } from '../bench/result-file.ts';
import { defaultLayout, QUANTIZE_METHODS, QUANTIZED_LAYOUTS, quantizeCheckpoint, type QuantizedLayout, type QuantizeMethod } from '../quantize/quantize-checkpoint.ts';
import { CALIBRATION_FLAGS, CALIBRATION_WINDOW_HELP, calibrationFromFlags } from './calibration-samples.ts';
import { integerFlag, oneOf } from './engine-flags.ts';
import { parseFlags } from './parse-flags.ts';

const DEFAULTS = { groupSize: 128 };

export const QUANTIZE_HELP = `Usage: keel quantize --method gptq|awq|rtn --bits 4|8 --calibration FILE --output DIR [options]
       keel quantize --method vq [--codebooks 2x8|1x16] --output DIR [options]

Quantizes a 16-bit checkpoint's attention and MLP projections (embeddings, norms and the LM head
stay 16-bit) and writes a checkpoint Keel, transformers and vLLM load (docs/quantization.md):

  gptq   GPTQ: columns quantized one by one, each one's error compensated on the columns still
         to come through the inverse Hessian of the calibration inputs, layer by layer (each
         decoder layer calibrated with the ones before it quantized; GPTQ layout, symmetric)
  awq    AWQ: per-input-channel scales searched on the calibration activations, folded into the
         norm or projection before, then round to nearest (AutoAWQ's GEMM layout, 4-bit only)
  rtn    round to nearest, no calibration needed (GPTQ layout, symmetric)
  vq     vector quantization in AQLM's layout (quant_method aqlm, 2 bits a weight): groups of 8
         input columns coded as sums of codebook vectors, one scale per row: AQLM's beam search
         over the codes alternating with least-squares codebook updates on the output error
         (calibration: XᵀX; without it, the weight error), from k-means; no fine-tuning

Runs on the GPU when there is one (--backend): the calibration passes, GPTQ and the output
errors (the reports', AWQ's search's); AWQ's round-to-nearest trials and clipping and vq run on
the CPU either way. On the CPU the default model and small models take seconds to minutes.
Progress goes to stderr, a line per stage (calibrated, each AWQ scale search, each linear
quantized with its output error), each with the seconds since calibration began.

  --model DIR|ORG/NAME[@REV]     the 16-bit model (default: keel-tiny)
  --method gptq|awq|rtn
  --bits 4|8                     code width (awq: 4; not for vq)
  --codebooks 2x8|1x16           vq: two 256-vector codebooks or one of 65536 (default 2x8)
  --group-size G                 input columns per scale group, -1 for one per row (default ${DEFAULTS.groupSize})
  --act-order                    gptq: quantize columns by decreasing activation (desc_act)
  --true-sequential              gptq: calibrate each projection with those before it in its layer
                                 quantized (o_proj after q/k/v, gate/up after the attention, down
                                 after gate/up; one pass each), not only the layers before
  --awq-clip                     awq: then clamp each group's largest weights where that lowers its
                                 outputs' error on the calibration inputs (AutoAWQ's auto_clip; on
                                 keel-tiny it raised held-out perplexity, so it is off by default)
  --format gptq|awq|compressed-tensors
                                 the checkpoint layout: the method's own (gptq and rtn: GPTQ's;
                                 awq: AutoAWQ's GEMM), or compressed-tensors' pack-quantized
                                 (llm-compressor's int4/int8 weight-only layout) for any of the three
  --calibration FILE             text tokenized with the model's tokenizer (gptq, awq; vq: weights
                                 its objective; rtn: only to measure its error)
${CALIBRATION_WINDOW_HELP}
  --output DIR                   where the quantized checkpoint is written
  --backend auto|cpu|cuda        where it runs (default auto: the GPU when one is usable)
  --result FILE                  also write a benchmark result (suite quantize: the seconds it took,
                                 the summed output errors; device, date and commit)
  --json                         print one JSON line: each layer's output error on sampled calibration
                                 inputs beside round-to-nearest's`;

export async function quantizeCommand(argv: string[]): Promise<void> {
  const { values } = parseFlags('keel quantize', {
    args: argv,
    options: {
      model: { type: 'string' },
      method: { type: 'string' },
      bits: { type: 'string' },
      codebooks: { type: 'string' },
      'group-size': { type: 'string' },
      'act-order': { type: 'boolean' },
      'true-sequential': { type: 'boolean' },
      'awq-clip': { type: 'boolean' },
      format: { type: 'string' },
      ...CALIBRATION_FLAGS,
      output: { type: 'string' },
      backend: { type: 'string' },
      result: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(QUANTIZE_HELP);
    return;
  }
  const method = values.method as QuantizeMethod | undefined;
  if (method === undefined || !QUANTIZE_METHODS.includes(method)) throw invalidArgument(`--method must be one of ${QUANTIZE_METHODS.join(', ')} (got ${values.method ?? 'none'})`);
  const vq = method === 'vq';
  if (vq && values.bits !== undefined) throw invalidArgument('vq codes 2 bits a weight in either layout: choose it with --codebooks 2x8|1x16, not --bits');
  if (!vq && values.codebooks !== undefined) throw invalidArgument('--codebooks is a vq option');
  if (vq && values['group-size'] !== undefined) throw invalidArgument('vq codes groups of 8 input columns (AQLM in_group_size 8): --group-size is not a vq option');
  const codebooks = values.codebooks ?? '2x8';
  if (codebooks !== '2x8' && codebooks !== '1x16') throw invalidArgument(`--codebooks must be 2x8 or 1x16 (got ${codebooks})`);
  const bits = vq ? 4 : integerFlag('--bits', values.bits);
  if (bits !== 4 && bits !== 8) throw invalidArgument(`--bits must be 4 or 8 (got ${values.bits ?? 'none'})`);
  if (values.output === undefined) throw invalidArgument('give the directory to write the checkpoint to with --output');
  const groupFlag = integerFlag('--group-size', values['group-size']) ?? DEFAULTS.groupSize;
  if (values['act-order'] && method !== 'gptq') throw invalidArgument('--act-order is a GPTQ option');
  if (values['true-sequential'] && method !== 'gptq') throw invalidArgument('--true-sequential is a GPTQ option');
  if (values['awq-clip'] && method !== 'awq') throw invalidArgument('--awq-clip is an AWQ option');
  const backend = oneOf('--backend', values.backend, ['auto', 'cpu', 'cuda'] as const) ?? 'auto';
  const layout = values.format as QuantizedLayout | undefined;
  if (layout !== undefined && !QUANTIZED_LAYOUTS.includes(layout)) throw invalidArgument(`--format must be one of ${QUANTIZED_LAYOUTS.join(', ')} (got ${layout})`);
  const dir = values.model === undefined ? DEFAULT_MODEL_DIR : (await locateModel(values.model, { showProgress: true })).path;
  if (isGgufPath(dir)) throw invalidArgument(`${dir} is a GGUF file: keel quantize reads a 16-bit Hugging Face model directory (config.json, safetensors)`);
  const samples = calibrationFromFlags(dir, values, method === 'rtn' || vq, 'gptq and awq');
  const device = await selectQuantizeDevice(backend);
  const started = collectEnvironment({ backend: device.name, name: device.deviceName, cuda_version: null });
  const startedAt = performance.now();
  let reports;
  try {
    reports = quantizeCheckpoint({ model: dir, method, bits, groupSize: groupFlag === -1 ? null : groupFlag, actOrder: values['act-order'] ?? false, trueSequential: values['true-sequential'] ?? false, awqClip: values['awq-clip'] ?? false, layout, samples, output: values.output, codebooks: `aqlm-${codebooks}`, progress: (line) => console.error(line) }, device);
  } finally {
    device.dispose();
  }
  const seconds = (performance.now() - startedAt) / 1000;
  if (values.result !== undefined) {
    const config = { model: dir, method, ...(vq ? { codebooks } : { bits, group_size: groupFlag, act_order: values['act-order'] ?? false, true_sequential: values['true-sequential'] ?? false, format: layout ?? defaultLayout(method) }), samples: samples.length, tokens: samples.reduce((n, s) => n + s.length, 0) };
    const results = { seconds, layers: reports.length, summed_error: reports.reduce((e, r) => e + r.error, 0), summed_rtn_error: reports.reduce((e, r) => e + r.rtnError, 0) };
    console.error(`wrote ${writeResult({ ...modelFreeRun(started, device.driverCudaVersion), suite: 'quantize', config, results }, values.result)}`);
  }
  if (values.json) {
    console.log(JSON.stringify({ method, ...(vq ? { codebooks } : { bits, group_size: groupFlag }), output: values.output, calibrated: samples.length > 0, layers: reports.map((r) => ({ names: r.names, error: r.error, rtn_error: r.rtnError, ...(r.alpha === undefined ? {} : { alpha: r.alpha }), ...(r.clippedGroups === undefined ? {} : { clipped_groups: r.clippedGroups }) })) }));
  } else if (samples.length === 0) {
    console.log(`wrote ${values.output}: ${reports.length} layers ${method} ${vq ? codebooks : `${bits}-bit`}`);
  } else {
    const [error, rtn] = reports.reduce(([e, r], l) => [e + l.error, r + l.rtnError], [0, 0]);
    console.log(`wrote ${values.output}: ${reports.length} layers ${method} ${vq ? codebooks : `${bits}-bit`}; summed output error ${error.toExponential(3)} (round to nearest${vq ? ', 2-bit groups of 128' : ''}: ${rtn.toExponential(3)})`);
  }
}
