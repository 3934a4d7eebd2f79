import { isGgufPath } from '../checkpoint/model-files.ts';
import { DEFAULT_MODEL_DIR } from '../engine/load-engine.ts';
import { invalidArgument } from '../errors.ts';
import { locateModel } from '../model-source/locate-model.ts';
import { pruneCheckpoint } from '../prune/prune-checkpoint.ts';
import { PRUNE_METHODS, type PruneMethod } from '../tensor/prune24.ts';
import { SPARSITY_PATTERNS, type SparsityPattern } from '../tensor/sparse24.ts';
import { CALIBRATION_FLAGS, CALIBRATION_WINDOW_HELP, calibrationFromFlags } from './calibration-samples.ts';
import { parseFlags } from './parse-flags.ts';

export const PRUNE_HELP = `Usage: keel prune --method magnitude|wanda --pattern 2:4 --output DIR [options]

Prunes a 16-bit checkpoint's attention and MLP projections to 2:4 sparsity (in every group of 4
consecutive input columns of a row, 2 weights become 0; embeddings, norms, the LM head and MoE
experts stay dense) and writes a checkpoint that Keel runs sparse (--sparsity 2:4 is implied by its
config) and compressed-tensors loaders read (docs/sparsity.md):

  magnitude   zero the 2 weights of smallest |w| of each group (no calibration needed)
  wanda       zero the 2 of smallest |w| · ‖x‖₂, ‖x‖₂ the norm of the weight's input channel over
              the calibration tokens (Wanda)

Runs on the CPU backend. No fine-tuning: the model's quality drops; tools/train/recover_sparse.py
fine-tunes the pruned checkpoint with its 2:4 mask fixed (docs/sparsity.md measures both).

  --model DIR|ORG/NAME[@REV]     the 16-bit model (default: keel-tiny)
  --method magnitude|wanda
  --pattern 2:4                  the sparsity pattern
  --calibration FILE             text tokenized with the model's tokenizer (wanda; magnitude: only
                                 to measure its error)
${CALIBRATION_WINDOW_HELP}
  --output DIR                   where the pruned checkpoint is written
  --json                         print one JSON line: each weight's output error on sampled
                                 calibration inputs beside magnitude pruning's`;

export async function pruneCommand(argv: string[]): Promise<void> {
  const { values } = parseFlags('keel prune', {
    args: argv,
    options: {
      model: { type: 'string' },
      method: { type: 'string' },
      pattern: { type: 'string' },
      ...CALIBRATION_FLAGS,
      output: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(PRUNE_HELP);
    return;
  }
  const method = values.method as PruneMethod | undefined;
  if (method === undefined || !PRUNE_METHODS.includes(method)) throw invalidArgument(`--method must be one of ${PRUNE_METHODS.join(', ')} (got ${values.method ?? 'none'})`);
  const pattern = values.pattern as SparsityPattern | undefined;
  if (pattern === undefined || !SPARSITY_PATTERNS.includes(pattern)) throw invalidArgument(`--pattern must be one of ${SPARSITY_PATTERNS.join(', ')} (got ${values.pattern ?? 'none'})`);
  if (values.output === undefined) throw invalidArgument('give the directory to write the checkpoint to with --output');
  const dir = values.model === undefined ? DEFAULT_MODEL_DIR : (await locateModel(values.model, { showProgress: true })).path;
  if (isGgufPath(dir)) throw invalidArgument(`${dir} is a GGUF file: keel prune reads a 16-bit Hugging Face model directory (config.json, safetensors)`);
  const samples = calibrationFromFlags(dir, values, method === 'magnitude', 'wanda');
  const reports = pruneCheckpoint({ model: dir, method, pattern, samples, output: values.output });
  if (values.json) {
    console.log(JSON.stringify({ method, pattern, output: values.output, calibrated: samples.length > 0, weights: reports.map((r) => ({ name: r.name, error: r.error, magnitude_error: r.magnitudeError })) }));
  } else if (samples.length === 0) {
    console.log(`wrote ${values.output}: ${reports.length} weights pruned ${pattern} by ${method}`);
  } else {
    const [error, magnitude] = reports.reduce(([e, m], r) => [e + r.error, m + r.magnitudeError], [0, 0]);
    console.log(`wrote ${values.output}: ${reports.length} weights pruned ${pattern} by ${method}; summed output error ${error.toExponential(3)} (magnitude: ${magnitude.toExponential(3)})`);
  }
}
