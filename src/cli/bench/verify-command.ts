import { fileURLToPath } from 'node:url';
import { ENGINE_FLAGS, ENGINE_FLAGS_HELP, engineConfigFromFlags } from '../engine-flags.ts';
import { verifyTable } from '../../bench/console-report.ts';
import { keelRunHeader, probeBenchBackend, repoRelative } from '../../bench/keel-run.ts';
import { benchProgress } from '../../bench/progress.ts';
import { writeResult } from '../../bench/result-file.ts';
import { RESULT_SCHEMA_VERSION } from '../../bench/result-schema.ts';
import { runVerifyBenchmark, stepsPerBatch, type VerifyOptions } from '../../bench/verify-benchmark.ts';
import { loadModel } from '../../engine/load-engine.ts';
import { resolveKvCacheDtype } from '../../step/kv-cache-layout.ts';
import { nonNegativeIntFlag, positiveIntFlag, positiveIntList } from './bench-flags.ts';
import { parseFlags } from '../parse-flags.ts';

/** The model the figures are for, in Keel's checkout: Llama-3.1-8B's shapes with random weights. */
const DEFAULT_MODEL = fileURLToPath(new URL('../../../bench/configs/llama-3.1-8b', import.meta.url));
const DEFAULTS = { batchSize: '1,8,32', queryTokens: '1,2,4,8,16,32', contextLen: 512, numIters: 20, numItersWarmup: 5 };

export const VERIFY_HELP = `Usage: keel bench verify [options]

What verifying drafts costs the target model: for each batch size and each query length q, one
forward pass in which every sequence runs a verification chunk of q tokens (its last sampled token
and q - 1 drafts) after --context-len cached tokens, with logits at all q positions, beside a
plain decode step (one token per sequence) of the same batch and context; each replayed as a CUDA
graph of the padded batch where the engine replays one, else eager (the result says which). A step's time is the wall clock of its uploads and forward, the device synchronized after
it; sampling is not timed. Reports each step's mean and median ms, ms per query token (over batch
× q tokens) and its ratio to the decode step's. The context is written by prefill steps first.
Without --model: Llama-3.1-8B's shapes (bench/configs/llama-3.1-8b) with --load-format dummy.
Writes JSON to ./bench-results/ (or --output).

  --batch-size LIST              batch sizes (default ${DEFAULTS.batchSize})
  --query-tokens LIST            tokens of each sequence's verification chunk (default ${DEFAULTS.queryTokens})
  --context-len N                tokens cached before each step's (default ${DEFAULTS.contextLen})
  --num-iters N                  measured steps of each kind (default ${DEFAULTS.numIters})
  --num-iters-warmup N           unmeasured steps first, the decode graph recorded in them (default ${DEFAULTS.numItersWarmup})
  --output FILE                  where to write the JSON result

${ENGINE_FLAGS_HELP}`;

export async function verifyCommand(argv: string[]): Promise<void> {
  const { values } = parseFlags('keel bench verify', {
    args: argv,
    options: {
      ...ENGINE_FLAGS,
      'batch-size': { type: 'string' },
      'query-tokens': { type: 'string' },
      'context-len': { type: 'string' },
      'num-iters': { type: 'string' },
      'num-iters-warmup': { type: 'string' },
      output: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(VERIFY_HELP);
    return;
  }
  const flags = engineConfigFromFlags(values);
  const engine = flags.model === undefined ? { ...flags, model: DEFAULT_MODEL, loadFormat: flags.loadFormat ?? 'dummy' } : flags;
  const options: VerifyOptions = {
    batchSizes: positiveIntList('--batch-size', values['batch-size'] ?? DEFAULTS.batchSize),
    queryTokens: positiveIntList('--query-tokens', values['query-tokens'] ?? DEFAULTS.queryTokens),
    contextLen: nonNegativeIntFlag('--context-len', values['context-len'], DEFAULTS.contextLen),
    numIters: positiveIntFlag('--num-iters', values['num-iters'], DEFAULTS.numIters),
    numItersWarmup: nonNegativeIntFlag('--num-iters-warmup', values['num-iters-warmup'], DEFAULTS.numItersWarmup),
  };
  const facts = await probeBenchBackend(engine, { bandwidth: false });
  const loaded = await loadModel({ ...engine, backend: facts.backend });
  try {
    const { config } = loaded;
    console.log(`keel bench verify: ${config.model} on ${facts.backend} (${facts.deviceName}), ${options.contextLen} cached tokens`);
    // The run is dated and attributed to a commit when it starts.
    const header = keelRunHeader({ llm: loaded, facts });
    const steps = stepsPerBatch(options) * options.batchSizes.length;
    const progress = benchProgress('verify', steps, 'steps', config.showProgress);
    const results = runVerifyBenchmark(loaded, { ...options, onStep: () => progress.tick() });
    progress.stop();
    console.log(verifyTable(results));
    const path = writeResult(
      {
        suite: 'verify',
        schema_version: RESULT_SCHEMA_VERSION,
        status: 'ok',
        error: null,
        ...header,
        config: {
          batch_sizes: options.batchSizes,
          query_tokens: options.queryTokens,
          context_len: options.contextLen,
          num_iters: options.numIters,
          num_iters_warmup: options.numItersWarmup,
          seed: config.seed,
          timing: 'wall clock of beginStep + forward, the device synchronized after each step; sampling not timed',
          verify_steps: 'a causal chain of q tokens per sequence with logits at every position (BatchDescription.verificationChunks), replayed as a graph of the padded batch where the engine replays one (cuda_graph)',
          engine: { model: repoRelative(config.model), block_size: config.blockSize, kv_cache_dtype: resolveKvCacheDtype(config.kvCacheDtype), max_num_seqs: config.maxNumSeqs, max_num_batched_tokens: config.maxNumBatchedTokens, enforce_eager: config.enforceEager, quantization: config.quantization },
        },
        results,
      },
      values.output,
    );
    console.log(`wrote ${path}`);
  } finally {
    loaded.backend.dispose();
    await loaded.ranks?.close();
  }
}
