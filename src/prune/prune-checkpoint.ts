import { resolve } from 'node:path';
import { openCheckpoint } from '../checkpoint/checkpoint.ts';
import type { SafetensorsTensor } from '../checkpoint/safetensors-writer.ts';
import { writeModelDirectory } from '../checkpoint/write-model-directory.ts';
import { invalidArgument } from '../errors.ts';
import { createModel, readModelArchitecture } from '../models/registry.ts';
import { calibrate, recordedHessian } from '../quantize/calibration.ts';
import { outputError } from '../quantize/group-quantizer.ts';
import { float32ToHostTensor, hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import type { SparsityPattern } from '../tensor/sparse24.ts';
import { inputNormsFromGram, prune24, type PruneMethod } from '../tensor/prune24.ts';

export interface PruneOptions {
  /** A 16-bit model directory. */
  model: string;
  method: PruneMethod;
  pattern: SparsityPattern;
  /** Calibration token windows; wanda needs them, magnitude only measures its error on them. */
  samples: number[][];
  output: string;
}

/**
 * One pruned weight's output error Σ‖x (W − Ŵ)ᵀ‖² over the sampled calibration inputs
 * (calibration.ts SAMPLE_ROWS), beside magnitude pruning's.
 */
export interface PruneReport {
  name: string;
  error: number;
  magnitudeError: number;
}

/**
 * `keel prune`: 2:4-prunes the linear layers Keel runs sparse (attention and dense MLP
 * projections; embeddings, norms, the LM head, MoE routers and experts stay dense) and writes the
 * checkpoint to `output`, its weights in their dtype (zeros stored), config.json declaring the
 * sparsity as compressed-tensors does (`quantization_config.sparsity_config`, format dense), the
 * other files of the model directory copied. docs/sparsity.md says how each method works.
 */
export function pruneCheckpoint(o: PruneOptions): PruneReport[] {
  const architecture = readModelArchitecture(o.model);
  if (architecture.quantization !== null) throw invalidArgument(`${o.model} is quantized (quant_method ${architecture.quantization.method}): keel prune reads 16-bit checkpoints`);
  if (architecture.languageModelOnly) throw invalidArgument(`${o.model} is a vision-language checkpoint: keel prune writes text-only ones, whose tensors are named as a causal LM's`);
  if (architecture.sparsity !== null) throw invalidArgument(`${o.model} is already ${architecture.sparsity.pattern} sparse`);
  if (resolve(o.output) === resolve(o.model)) throw invalidArgument('--output must be a new directory, not the model directory');
  if (o.method === 'wanda' && o.samples.length === 0) throw invalidArgument('wanda weighs each weight by its calibration inputs: it needs calibration text');
  const ckpt = openCheckpoint(o.model);
  try {
    const model = createModel(architecture, Math.max(...o.samples.map((s) => s.length), 2));
    // Without calibration (magnitude), a two-token probe finds the layers; their errors then mean nothing.
    const linears = calibrate(model, ckpt, o.samples.length === 0 ? [[0, 0]] : o.samples);
    const tensors = new Map<string, SafetensorsTensor>();
    const reports: PruneReport[] = [];
    let zeros = 0;
    for (const linear of linears) {
      const norms = o.method === 'wanda' ? inputNormsFromGram(recordedHessian(linear).toHost(), linear.cols) : null;
      for (const name of linear.names) {
        const raw = ckpt.read(name);
        const [rows, cols] = raw.shape;
        const w = hostTensorToFloat32(raw);
        const pruned = prune24(w, rows, cols, norms);
        const magnitude = norms === null ? pruned : prune24(w, rows, cols, null);
        const error = (p: Float32Array) => outputError(linear.sample, linear.sampleRows, Float64Array.from(w), Float64Array.from(p), rows, cols);
        const errorOf = error(pruned);
        reports.push({ name, error: errorOf, magnitudeError: norms === null ? errorOf : error(magnitude) });
        for (const v of pruned) if (v === 0) zeros++;
        // Kept values are the checkpoint's own, so they convert back to its dtype exactly.
        const t = float32ToHostTensor(pruned, raw.dtype, [rows, cols]);
        tensors.set(name, { dtype: ckpt.info(name).dtype, shape: t.shape, data: t.data });
      }
    }
    let parameters = 0;
    for (const name of ckpt.tensorNames) {
      const info = ckpt.info(name);
      parameters += info.shape.reduce((n, d) => n * d, 1);
      if (tensors.has(name)) continue;
      const raw = ckpt.readRaw(name);
      tensors.set(name, { dtype: raw.dtype, shape: raw.shape, data: raw.data });
    }
    const targets = linears.flatMap((l) => l.names.map((n) => n.slice(0, -'.weight'.length)));
    writeModelDirectory(o.model, o.output, tensors, { quantization_config: sparsityQuantizationConfig(o, targets, zeros / parameters) });
    return reports;
  } finally {
    ckpt.close();
  }
}

/**
 * config.json's quantization_config for a sparse, unquantized checkpoint, as compressed-tensors
 * writes one (so llm-compressor's loaders, vLLM and Keel read it): no quantization groups, a
 * sparsity_config naming the pruned modules, the weights stored dense.
 */
function sparsityQuantizationConfig(o: PruneOptions, targets: string[], globalSparsity: number): Record<string, unknown> {
  return {
    quant_method: 'compressed-tensors',
    format: 'dense',
    quantization_status: 'compressed',
    config_groups: {},
    ignore: [],
    sparsity_config: {
      format: 'dense',
      sparsity_structure: o.pattern,
      targets,
      ignore: [],
      global_sparsity: globalSparsity,
      registry_requires_subclass: false,
    },
  };
}
