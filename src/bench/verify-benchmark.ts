// What one target pass of speculative verification costs (what `keel bench verify` reports): each
// sequence of a batch runs a verification chunk of q tokens (its last sampled token and q - 1
// drafts) after the same cached context, with logits at all q positions, beside a plain decode
// step of the same batch; both replayed as CUDA graphs of the padded batch where the engine would
// replay them (every sequence verifying q - 1 drafts, as here), eagerly elsewhere. The sampling
// pass after the forward is not timed.
import type { Backend, KvCache } from '../backend/backend.ts';
import { invalidArgument } from '../errors.ts';
import { GraphBatches } from '../engine/graph-batch.ts';
import { recordsDecodeGraphs, type LoadedModel } from '../engine/load-engine.ts';
import { resolveKvCacheDtype } from '../step/kv-cache-layout.ts';
import type { BatchDescription } from '../step/batch.ts';
import { waitForDevice } from './backend-probe.ts';
import type { VerifyResults } from './result-schema.ts';
import { mean, percentile } from './statistics.ts';
import { BlockAssignment, buildBatch, seededRng, seqChunks, type SeqSpec } from './synthetic-batch.ts';

export interface VerifyOptions {
  batchSizes: number[];
  queryTokens: number[];
  /** Tokens in the cache before each step's tokens. */
  contextLen: number;
  numIters: number;
  numItersWarmup: number;
  /** Called after every step run, measured or not (progress). */
  onStep?: () => void;
}

type VerifyTarget = Pick<LoadedModel, 'config' | 'modelConfig' | 'backend' | 'model' | 'offload' | 'maxModelLen' | 'ranks'>;

/** Steps run for each batch size: its decode step and one per query length, each warmed up and measured. */
export function stepsPerBatch(options: VerifyOptions): number {
  return (1 + options.queryTokens.length) * (options.numItersWarmup + options.numIters);
}

/**
 * Times, for each batch size, a plain decode step and a verification pass of each query length,
 * over a KV cache of its own whose context prefill steps wrote (the model's K/V, not zeros). The
 * step's wall-clock time: beginStep (the batch's uploads) and the forward, the device synchronized
 * after it; `numItersWarmup` unmeasured steps first (a decode graph is recorded in them).
 */
export function runVerifyBenchmark(target: VerifyTarget, options: VerifyOptions): VerifyResults {
  const { backend, model, config } = target;
  if (target.ranks !== null) throw invalidArgument('keel bench verify times one device: drop --tensor-parallel-size and --pipeline-parallel-size');
  const maxBatch = Math.max(...options.batchSizes);
  const maxQuery = Math.max(...options.queryTokens);
  if (options.contextLen + maxQuery > target.maxModelLen) {
    throw invalidArgument(`--context-len ${options.contextLen} and ${maxQuery} query tokens run past the model's length ${target.maxModelLen} (--max-model-len)`);
  }
  // Token ids of a synthetic step are 0..numTokens-1 (synthetic-batch.ts).
  if (maxBatch * maxQuery > target.modelConfig.vocabSize) {
    throw invalidArgument(`a step of ${maxBatch} sequences × ${maxQuery} query tokens has more tokens than the model's vocabulary (${target.modelConfig.vocabSize}) has ids`);
  }
  const blockSize = config.blockSize;
  const numBlocks = maxBatch * Math.ceil((options.contextLen + maxQuery) / blockSize);
  // One block past the pool for a graph step's padding rows, as the engine's pool has.
  const cache = backend.createKvCache({ numBlocks: numBlocks + 1, blockSize, layers: model.kvLayers, dtype: resolveKvCacheDtype(config.kvCacheDtype) });
  const blocks = new BlockAssignment(seededRng(config.seed), numBlocks, maxBatch);
  const run = (batch: BatchDescription) => () => void model.forward(backend, backend.beginStep(batch), cache);
  prefill(target, cache, blocks, maxBatch, options.contextLen);
  const graphs = recordsDecodeGraphs(backend, config, target.offload) ? new GraphBatches({ maxBatchSize: config.maxNumSeqs, scratchBlock: numBlocks, scratchStateSlot: null }, blockSize) : null;
  const results: VerifyResults = { decode: [], verify: [] };
  for (const batchSize of options.batchSizes) {
    const specs = (query: number, verification: boolean): SeqSpec[] => Array.from({ length: batchSize }, () => ({ cached: options.contextLen, query, verification }));
    const graphSize = graphs?.sizeFor(batchSize) ?? null;
    // A step of `query` tokens a sequence, as the model runner runs it.
    const step = (query: number, verification: boolean) =>
      graphSize === null
        ? run(buildBatch(specs(query, verification), blocks, blockSize))
        : replayed(target, cache, graphs!.padded(seqChunks(specs(query, verification), blocks, blockSize), graphSize, query));
    const decode = timeSteps(backend, step(1, false), options);
    results.decode.push({ batch_size: batchSize, mean_step_ms: decode.mean, median_step_ms: decode.median, ms_per_token: decode.mean / batchSize, cuda_graph: graphSize !== null });
    for (const query of options.queryTokens) {
      const verify = timeSteps(backend, step(query, true), options);
      results.verify.push({
        batch_size: batchSize,
        query_tokens: query,
        mean_step_ms: verify.mean,
        median_step_ms: verify.median,
        ms_per_query_token: verify.mean / (batchSize * query),
        ratio_to_decode: verify.mean / decode.mean,
        cuda_graph: graphSize !== null,
      });
    }
  }
  return results;
}

/**
 * Writes `contextLen` tokens of every sequence's K/V with prefill steps of all sequences together,
 * each at most maxNumBatchedTokens tokens (as the engine chunks prompts) and no more than the
 * vocabulary has ids.
 */
function prefill(target: VerifyTarget, cache: KvCache, blocks: BlockAssignment, numSeqs: number, contextLen: number): void {
  const { backend, model, config } = target;
  const chunk = Math.max(1, Math.floor(Math.min(config.maxNumBatchedTokens, target.modelConfig.vocabSize) / numSeqs));
  for (let start = 0; start < contextLen; start += chunk) {
    const specs = Array.from({ length: numSeqs }, () => ({ cached: start, query: Math.min(chunk, contextLen - start) }));
    model.forward(backend, backend.beginStep(buildBatch(specs, blocks, config.blockSize)), cache);
  }
  waitForDevice(backend);
}

/** A step as the model runner replays it: the graph of its padded shape, recorded at the first call. */
function replayed(target: VerifyTarget, cache: KvCache, batch: BatchDescription): () => void {
  const { backend, model } = target;
  const owner = {};
  return () => {
    const step = backend.beginStep(batch);
    backend.replayForward(step, owner, () => model.forward(backend, step, cache));
  };
}

/** Mean and median milliseconds of `run` over the measured steps, each waited for on the device. */
function timeSteps(backend: Backend, run: () => void, options: VerifyOptions): { mean: number; median: number } {
  for (let i = 0; i < options.numItersWarmup; i++) {
    run();
    options.onStep?.();
  }
  waitForDevice(backend);
  const times: number[] = [];
  for (let i = 0; i < options.numIters; i++) {
    const start = performance.now();
    run();
    waitForDevice(backend);
    times.push(performance.now() - start);
    options.onStep?.();
  }
  return { mean: mean(times), median: percentile(times, 50) };
}
