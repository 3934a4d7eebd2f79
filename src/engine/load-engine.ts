import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../backend/backend.ts';
import { selectBackend } from '../backend/select-backend.ts';
import { DEFAULT_ENGINE_CONFIG, type EngineConfig } from '../config.ts';
import { KeelError, invalidArgument } from '../errors.ts';
import { openCheckpoint } from '../model/checkpoint.ts';
import { dummyLlamaWeights } from '../model/dummy-weights.ts';
import { readGenerationConfig } from '../model/generation-config.ts';
import { readModelConfig } from '../model/hf-config.ts';
import { LlamaModel } from '../model/llama.ts';
import { loadModelWeights } from '../model/load-llama-weights.ts';
import { modelContextLength } from '../model/context-length.ts';
import type { ModelConfig } from '../model/model-config.ts';
import { buildRopeTable } from '../model/rope.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import { loadTokenizerIfPresent, type Tokenizer } from '../tokenizer/tokenizer.ts';
import { BlockPool } from './block-pool.ts';
import { KvCacheManager } from './kv-cache-manager.ts';
import { LLMEngine } from './llm-engine.ts';
import { ModelRunner } from './model-runner.ts';
import { Scheduler } from './scheduler.ts';

/** The model Keel runs when none is named: trained by the project and shipped in the repo. */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL('../../models/keel-tiny', import.meta.url));

export interface LoadedEngine extends LoadedModel {
  engine: LLMEngine;
  numKvBlocks: number;
}

export function resolveEngineConfig(options: Partial<EngineConfig>): EngineConfig {
  const config: EngineConfig = { ...DEFAULT_ENGINE_CONFIG, model: DEFAULT_MODEL_DIR, ...stripUndefined(options) };
  const positiveInt = (name: keyof EngineConfig) => {
    const v = config[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw invalidArgument(`${name} must be a positive integer (got ${v})`);
  };
  positiveInt('blockSize');
  positiveInt('maxNumSeqs');
  positiveInt('maxNumBatchedTokens');
  if (config.numKvBlocks !== null) positiveInt('numKvBlocks');
  if (config.maxModelLen !== null) positiveInt('maxModelLen');
  if (!(config.gpuMemoryUtilization > 0 && config.gpuMemoryUtilization <= 1)) {
    throw invalidArgument(`gpuMemoryUtilization must be in (0, 1] (got ${config.gpuMemoryUtilization})`);
  }
  if (!existsSync(config.model)) throw new KeelError('invalid_model', `model directory not found: ${config.model}`);
  return config;
}

/** A model ready to run on a backend: everything but the KV pool and the scheduler. */
export interface LoadedModel {
  config: EngineConfig;
  modelConfig: ModelConfig;
  tokenizer: Tokenizer | null;
  eosTokenIds: number[];
  samplingDefaults: Partial<SamplingParams>;
  maxModelLen: number;
  backend: Backend;
  model: LlamaModel;
}

export async function loadModel(options: Partial<EngineConfig>): Promise<LoadedModel> {
  const config = resolveEngineConfig(options);
  const modelConfig = readModelConfig(config.model);
  const generation = readGenerationConfig(config.model, modelConfig);
  const tokenizer = loadTokenizerIfPresent(config.model);
  const contextLength = modelContextLength(modelConfig);
  if (config.maxModelLen !== null && config.maxModelLen > contextLength) {
    throw invalidArgument(`maxModelLen ${config.maxModelLen} exceeds the model's context length (${contextLength})`);
  }
  const maxModelLen = config.maxModelLen ?? contextLength;
  const backend = await selectBackend(config.backend);
  try {
    const weights =
      config.loadFormat === 'dummy'
        ? dummyLlamaWeights(modelConfig, backend, config.seed)
        : loadModelWeights(openCheckpoint(config.model), modelConfig, backend, { showProgress: config.showProgress });
    const rope = backend.uploadRopeTable(buildRopeTable(modelConfig, maxModelLen));
    const model = new LlamaModel(modelConfig, weights, backend, rope);
    return {
      config,
      modelConfig,
      tokenizer,
      eosTokenIds: generation.eosTokenIds,
      samplingDefaults: generation.defaults,
      maxModelLen,
      backend,
      model,
    };
  } catch (error) {
    backend.dispose();
    throw error;
  }
}

export async function loadEngine(options: Partial<EngineConfig>): Promise<LoadedEngine> {
  const loaded = await loadModel(options);
  const { config, modelConfig, backend } = loaded;
  try {
    const numKvBlocks = config.numKvBlocks ?? kvBlocksForBudget(backend, config, modelConfig);
    // One sequence must fit in the pool on its own, or it would preempt itself forever.
    const poolTokens = numKvBlocks * config.blockSize;
    if (config.maxModelLen !== null && config.maxModelLen > poolTokens) {
      throw invalidArgument(`maxModelLen ${config.maxModelLen} does not fit in the KV pool (${numKvBlocks} blocks of ${config.blockSize} = ${poolTokens} tokens)`);
    }
    const maxModelLen = Math.min(loaded.maxModelLen, poolTokens);
    if (config.showProgress) {
      const bytes = 2 * modelConfig.numLayers * poolTokens * modelConfig.numKvHeads * modelConfig.headDim * backend.kvElementBytes;
      process.stderr.write(
        `keel: ${backend.name} backend, KV cache ${numKvBlocks} blocks × ${config.blockSize} tokens = ${poolTokens} tokens ` +
          `(${(bytes / 2 ** 30).toFixed(2)} GiB), max model length ${maxModelLen}\n`,
      );
    }
    // Graph steps pad their batch with rows that write to one block no sequence owns.
    const graphs = backend.recordsGraphs && !config.enforceEager ? { maxBatchSize: config.maxNumSeqs, scratchBlock: numKvBlocks } : null;
    const cache = backend.createKvCache({
      numLayers: modelConfig.numLayers,
      numBlocks: numKvBlocks + (graphs === null ? 0 : 1),
      blockSize: config.blockSize,
      numKvHeads: modelConfig.numKvHeads,
      headDim: modelConfig.headDim,
    });
    const kv = new KvCacheManager(new BlockPool(numKvBlocks, config.enablePrefixCaching), config.blockSize, config.enablePrefixCaching);
    const scheduler = new Scheduler(
      {
        maxNumSeqs: config.maxNumSeqs,
        maxNumBatchedTokens: config.maxNumBatchedTokens,
        blockSize: config.blockSize,
        maxModelLen: maxModelLen,
      },
      kv,
    );
    const engine = new LLMEngine({
      scheduler,
      kv,
      runner: new ModelRunner(backend, loaded.model, cache, config.blockSize, graphs),
      tokenizer: loaded.tokenizer,
      vocabSize: modelConfig.vocabSize,
      eosTokenIds: loaded.eosTokenIds,
      maxModelLen,
      numKvBlocks,
      defaultSeed: config.seed,
      asyncScheduling: config.asyncScheduling,
    });
    return { ...loaded, maxModelLen, engine, numKvBlocks };
  } catch (error) {
    backend.dispose();
    throw error;
  }
}

function kvBlocksForBudget(backend: Backend, config: EngineConfig, model: ModelConfig): number {
  const bytesPerBlock = 2 * model.numLayers * config.blockSize * model.numKvHeads * model.headDim * backend.kvElementBytes;
  const numBlocks = Math.floor(backend.kvCacheBudgetBytes(config) / bytesPerBlock);
  if (numBlocks < 1) throw new KeelError('unavailable', `no memory is left for the KV cache (${bytesPerBlock} bytes per block)`);
  return numBlocks;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
