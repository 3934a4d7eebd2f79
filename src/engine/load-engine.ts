import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend, WeightStream } from '../backend/backend.ts';
import { selectBackend } from '../backend/select-backend.ts';
import { DEFAULT_ENGINE_CONFIG, DEFAULT_SPECULATIVE_CONFIG, MAX_DATA_PARALLEL_SIZE, MAX_LORA_RANK, SPECULATIVE_METHODS, STREAMING_MAX_MODEL_LEN, type EngineConfig, type EngineOptions, type SpeculativeConfig, type SpeculativeMethod } from '../config.ts';
import { KeelError, invalidArgument, invalidModel } from '../errors.ts';
import { locateModel } from '../model-source/locate-model.ts';
import type { ModelFiles } from '../checkpoint/model-documents.ts';
import { openModelFiles } from '../checkpoint/model-files.ts';
import { openCheckpoint, openCheckpointNamed, type Checkpoint } from '../checkpoint/checkpoint.ts';
import type { CheckpointSparsity } from '../checkpoint/sparsity-config.ts';
import type { LoraTarget } from '../layers/parameters.ts';
import type { CausalLM } from '../models/causal-lm.ts';
import { loadDummyWeights } from '../models/dummy-weights.ts';
import { readGenerationConfig } from '../models/generation-config.ts';
import { loadWeightsWithProgress } from '../models/load-weights.ts';
import { MedusaHeads, parseMedusaConfig } from '../models/medusa-heads.ts';
import { resolveSparsity, withLinearsDequantized, withQuantization, withSparsity } from '../models/model-checkpoint.ts';
import { SPARSITY_PATTERNS } from '../tensor/sparse24.ts';
import { LOAD_TIME_QUANTIZATIONS } from '../tensor/quantize-rtn.ts';
import type { ModelConfig } from '../models/model-config.ts';
import { createModel, modelArchitectureOf, openModelCheckpoint, type ModelArchitecture } from '../models/registry.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import { KV_CACHE_DTYPE_NAMES, keepsSequenceState, kvBytesPerBlock, kvCacheGroups, stateBytesPerSlot, resolveKvCacheDtype, sparseBlockCounts, type KvRetention, type LayerKvSpec, type SparseAttention, type StreamingWindow } from '../step/kv-cache-layout.ts';
import { loadTokenizerIfPresent, type Tokenizer } from '../tokenizer/tokenizer.ts';
import { BlockPool } from './block-pool.ts';
import { HostPrefixCache } from './host-prefix-cache.ts';
import { blocksHeldAtOnce, KvCacheManager } from './kv-cache-manager.ts';
import { StateCheckpoints } from './state-checkpoints.ts';
import { stateSlotLayout } from './state-slots.ts';
import { LLMEngine } from './llm-engine.ts';
import { DEFAULT_MEDUSA_TREE, MedusaProposer, staticTree } from './medusa-proposer.ts';
import { ModelRunner } from './model-runner.ts';
import { HeadProposer } from './head-proposer.ts';
import { checkHeadTarget, loadEagleHead, loadMtpHead } from './load-draft-head.ts';
import type { DraftHead } from '../models/draft-head.ts';
import { MAX_TOP_LOGPROBS } from '../sampling/draw.ts';
import { LoraRegistry } from './lora-registry.ts';
import { LoraSlots } from './lora-slots.ts';
import { Scheduler } from './scheduler.ts';
import { layersToOffload } from './weight-offload.ts';
import { startRanks } from './parallel/start-ranks.ts';
import type { Ranks } from './parallel/ranks.ts';
import type { TensorParallelShard } from '../layers/parameters.ts';
import { pipelineStage, type PipelineStage } from '../models/pipeline-stage.ts';

/** The model Keel runs when none is named: trained by the project and shipped in the repo. */
export const DEFAULT_MODEL_DIR = fileURLToPath(new URL('../../models/keel-tiny', import.meta.url));

export interface LoadedEngine extends LoadedModel {
  engine: LLMEngine;
  numKvBlocks: number;
  /** The LoRA adapters served; null when LoRA is not enabled. */
  loras: LoraRegistry | null;
}

export function resolveEngineConfig(options: EngineOptions): EngineConfig {
  const { speculative, ...rest } = options;
  const config: EngineConfig = {
    ...DEFAULT_ENGINE_CONFIG,
    model: DEFAULT_MODEL_DIR,
    ...stripUndefined(rest),
    speculative: speculative ? resolveSpeculativeConfig(speculative) : null,
  };
  const positiveInt = (name: keyof EngineConfig) => {
    const v = config[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw invalidArgument(`${name} must be a positive integer (got ${v})`);
  };
  positiveInt('blockSize');
  positiveInt('maxNumSeqs');
  positiveInt('maxNumBatchedTokens');
  if (!(Number.isInteger(config.numStateCheckpoints) && config.numStateCheckpoints >= 0)) throw invalidArgument(`numStateCheckpoints must be a non-negative integer (got ${config.numStateCheckpoints})`);
  if (config.numKvBlocks !== null) positiveInt('numKvBlocks');
  if (config.maxModelLen !== null) positiveInt('maxModelLen');
  if (config.quantization !== null && !LOAD_TIME_QUANTIZATIONS.includes(config.quantization)) {
    throw invalidArgument(`quantization must be one of ${LOAD_TIME_QUANTIZATIONS.join(', ')} or null (got ${JSON.stringify(config.quantization)})`);
  }
  if (config.sparsity !== null && !SPARSITY_PATTERNS.includes(config.sparsity)) {
    throw invalidArgument(`sparsity must be one of ${SPARSITY_PATTERNS.join(', ')} or null (got ${JSON.stringify(config.sparsity)})`);
  }
  if (config.sparsity !== null && config.quantization !== null) {
    throw invalidArgument(`sparsity ${config.sparsity} runs 16-bit weights: it does not combine with quantization ${config.quantization}`);
  }
  if (!KV_CACHE_DTYPE_NAMES.includes(config.kvCacheDtype)) {
    throw invalidArgument(`kvCacheDtype must be one of ${KV_CACHE_DTYPE_NAMES.join(', ')} (got ${JSON.stringify(config.kvCacheDtype)})`);
  }
  if (!(config.gpuMemoryUtilization > 0 && config.gpuMemoryUtilization <= 1)) {
    throw invalidArgument(`gpuMemoryUtilization must be in (0, 1] (got ${config.gpuMemoryUtilization})`);
  }
  if ((config.streamingSinks === null) !== (config.streamingWindow === null)) {
    throw invalidArgument('StreamingLLM needs both streamingSinks and streamingWindow (--streaming-sinks S --streaming-window W)');
  }
  if (config.streamingSinks !== null && !(Number.isInteger(config.streamingSinks) && config.streamingSinks >= 0)) {
    throw invalidArgument(`streamingSinks must be a non-negative integer (got ${config.streamingSinks})`);
  }
  if (config.streamingWindow !== null) positiveInt('streamingWindow');
  checkSparseAttention(config);
  if (config.preemptionMode !== 'recompute' && config.preemptionMode !== 'swap') {
    throw invalidArgument(`preemptionMode must be recompute or swap (got ${JSON.stringify(config.preemptionMode)})`);
  }
  if (!(Number.isFinite(config.swapSpace) && config.swapSpace > 0)) throw invalidArgument(`swapSpace must be a positive number of GiB (got ${config.swapSpace})`);
  if (!(Number.isFinite(config.kvOffloadGb) && config.kvOffloadGb >= 0)) throw invalidArgument(`kvOffloadGb must be a non-negative number of GiB (got ${config.kvOffloadGb})`);
  if (!(Number.isFinite(config.cpuOffloadGb) && config.cpuOffloadGb >= 0)) throw invalidArgument(`cpuOffloadGb must be a non-negative number of GiB (got ${config.cpuOffloadGb})`);
  if (config.kvOffloadGb > 0 && !config.enablePrefixCaching) throw invalidArgument('kvOffloadGb is a tier of the prefix cache: it needs prefix caching (drop --no-prefix-caching)');
  positiveInt('maxLoras');
  positiveInt('maxLoraRank');
  if (config.maxLoraRank > MAX_LORA_RANK) throw invalidArgument(`maxLoraRank must be at most ${MAX_LORA_RANK} (got ${config.maxLoraRank})`);
  const names = config.loraModules.map((m) => m.name);
  const repeated = names.find((name, i) => names.indexOf(name) !== i);
  if (repeated !== undefined) throw invalidArgument(`LoRA adapter name ${repeated} is given twice`);
  positiveInt('tensorParallelSize');
  positiveInt('pipelineParallelSize');
  if (config.pipelineMicroBatches !== null) {
    positiveInt('pipelineMicroBatches');
    if (config.pipelineMicroBatches > config.pipelineParallelSize) {
      throw invalidArgument(
        `pipelineMicroBatches ${config.pipelineMicroBatches} exceeds pipelineParallelSize ${config.pipelineParallelSize}: the stages hold at most one micro-batch each (every stage receives before it sends)`,
      );
    }
  }
  positiveInt('dataParallelSize');
  if (config.dataParallelSize > MAX_DATA_PARALLEL_SIZE) throw invalidArgument(`dataParallelSize must be at most ${MAX_DATA_PARALLEL_SIZE} (got ${config.dataParallelSize}): run more servers behind a router for more replicas`);
  if (!(Number.isInteger(config.maxReplicaRestarts) && config.maxReplicaRestarts >= 0)) throw invalidArgument(`maxReplicaRestarts must be a non-negative integer (got ${config.maxReplicaRestarts})`);
  const resolved = { ...config, enableLora: config.enableLora || config.loraModules.length > 0 };
  checkParallelSupport(resolved);
  return resolved;
}

/** What a parallel run does not combine with yet, each refused by name (docs/parallelism.md). */
function checkParallelSupport(config: EngineConfig): void {
  if (config.enableExpertParallel && config.tensorParallelSize === 1) throw invalidArgument('enableExpertParallel places experts across the tensor-parallel devices: give tensorParallelSize > 1 too');
  if (config.tensorParallelSize === 1 && config.pipelineParallelSize === 1) return;
  const what = `tensorParallelSize ${config.tensorParallelSize} × pipelineParallelSize ${config.pipelineParallelSize}`;
  if (config.speculative !== null && config.speculative.method !== 'ngram') {
    // Draft models, heads (Medusa, EAGLE, EAGLE-3, MTP) and self-speculation all run on rank 0's
    // backend beside the sharded or staged target: the heads read hidden states every rank or
    // stage would have to hand over step by step.
    throw invalidArgument(
      `${what}: speculative method ${config.speculative.method} is not supported in parallel runs yet: a draft model, Medusa, EAGLE, EAGLE-3 and MTP heads and self-speculation all need one device (n-gram drafts work)`,
    );
  }
  if (config.enableLora) throw invalidArgument(`${what}: LoRA adapters are not supported in parallel runs yet`);
}

/** What sparse attention needs of the rest of the config; each combination it lacks is refused by name. */
function checkSparseAttention(config: EngineConfig): void {
  if (config.sparseAttention === null) {
    if (config.sparseTokenBudget !== null) throw invalidArgument('sparseTokenBudget needs sparseAttention quest (--sparse-attention quest --sparse-token-budget N)');
    return;
  }
  if (config.sparseAttention !== 'quest') throw invalidArgument(`sparseAttention must be quest or null (got ${JSON.stringify(config.sparseAttention)})`);
  const budget = config.sparseTokenBudget;
  if (budget === null) throw invalidArgument('sparse attention needs a token budget (--sparse-token-budget N)');
  if (!(Number.isInteger(budget) && budget >= 1)) throw invalidArgument(`sparseTokenBudget must be a positive integer (got ${budget})`);
  if (!(Number.isInteger(config.sparseSinkTokens) && config.sparseSinkTokens >= 0)) throw invalidArgument(`sparseSinkTokens must be a non-negative integer (got ${config.sparseSinkTokens})`);
  if (!(Number.isInteger(config.sparseWindowTokens) && config.sparseWindowTokens >= 1)) {
    throw invalidArgument(`sparseWindowTokens must be a positive integer: the recent window holds the decoded token's own block (got ${config.sparseWindowTokens})`);
  }
  if (!(Array.isArray(config.sparseDenseLayers) && config.sparseDenseLayers.every((i) => Number.isInteger(i) && i >= 0))) {
    throw invalidArgument(`sparseDenseLayers must be a list of layer indices (got ${JSON.stringify(config.sparseDenseLayers)})`);
  }
  const sparse = sparseAttentionOf(config)!;
  const blocks = sparseBlockCounts(sparse, config.blockSize);
  if (blocks.budget < blocks.sinks + blocks.window) {
    const least = (blocks.sinks + blocks.window) * config.blockSize;
    throw invalidArgument(
      `sparseTokenBudget ${budget} holds ${blocks.budget} blocks of ${config.blockSize} tokens, fewer than the ${blocks.sinks} sink and ${blocks.window} recent-window blocks every decode keeps: give at least ${least} (or fewer --sparse-sink-tokens / --sparse-window-tokens)`,
    );
  }
  if (streamingOf(config) !== null) throw invalidArgument('sparse attention does not combine with StreamingLLM (--streaming-sinks/--streaming-window): use one of them');
  // A tree token's ancestors sit at other cache indices than their positions: the blocks it selects
  // among must lie before its chunk, where blocks hold what its path's decodes would read.
  if (config.speculative !== null && draftsTrees(config.speculative)) {
    const depth = config.speculative.numSpeculativeTokens;
    const least = (Math.ceil(depth / config.blockSize) + 1) * config.blockSize;
    if (blocks.window * config.blockSize < least) {
      throw invalidArgument(
        `sparse attention verifies a draft tree ${depth} deep only when the recent window reaches past it: give --sparse-window-tokens at least ${least} (blocks of ${config.blockSize}), or draft chains`,
      );
    }
  }
}

/** Whether a speculative config drafts trees rather than chains. */
function draftsTrees(speculative: SpeculativeConfig): boolean {
  switch (speculative.method) {
    case 'ngram':
      return speculative.ngramBranches > 1;
    case 'medusa':
      return true;
    case 'eagle':
    case 'eagle3':
    case 'mtp':
      return speculative.treeWidth > 1;
    case 'draft':
    case 'self':
      return false;
  }
}

/** The option that made a speculative config draft trees (`draftsTrees`), for an error naming it. */
function treeOption(speculative: SpeculativeConfig): string {
  if (speculative.method === 'ngram') return `--ngram-branches ${speculative.ngramBranches}`;
  return speculative.method === 'medusa' ? '--speculative-method medusa' : `--speculative-tree-width ${speculative.treeWidth}`;
}

/** Micro-batches in flight at once over the pipeline stages: as many as there are stages unless the config says fewer. */
export function pipelineMicroBatchesOf(config: EngineConfig): number {
  return config.pipelineMicroBatches ?? config.pipelineParallelSize;
}

/** The sparse attention setting of a resolved config, or null. */
export function sparseAttentionOf(config: EngineConfig): SparseAttention | null {
  if (config.sparseAttention === null || config.sparseTokenBudget === null) return null;
  return { tokenBudget: config.sparseTokenBudget, sinkTokens: config.sparseSinkTokens, windowTokens: config.sparseWindowTokens };
}

/**
 * The target model's layers for pipeline stage `stage` of a config, with sparse attention when
 * the config asks for it (before the cache is laid out: it changes the layers' KV specs).
 */
export function createTargetModel(architecture: ModelArchitecture, maxModelLen: number, config: EngineConfig, stage?: PipelineStage): CausalLM {
  const model = createModel(architecture, maxModelLen, streamingOf(config), stage);
  const sparse = sparseAttentionOf(config);
  if (sparse === null) return model;
  if (model.useSparseAttention === undefined) throw invalidArgument(`this model's family (${architecture.family.name}) cannot run sparse attention`);
  model.useSparseAttention(sparse, config.sparseDenseLayers);
  return model;
}

/** The StreamingLLM setting of a resolved config, or null. */
export function streamingOf(config: EngineConfig): StreamingWindow | null {
  const { streamingSinks: sinks, streamingWindow: window } = config;
  return sinks === null || window === null ? null : { sinks, window };
}

/**
 * The longest sequence the engine allows: maxModelLen as given, or the model's context, or under
 * StreamingLLM `STREAMING_MAX_MODEL_LEN`. A model's context bounds it unless StreamingLLM keeps
 * every attention span (sinks plus window) within that context instead.
 */
function resolveMaxModelLen(config: EngineConfig, contextLength: number, what: string): number {
  const streaming = streamingOf(config);
  if (streaming === null) {
    if (config.maxModelLen !== null && config.maxModelLen > contextLength) {
      throw invalidArgument(`maxModelLen ${config.maxModelLen} exceeds ${what} context length (${contextLength}); --streaming-sinks and --streaming-window run past it`);
    }
    return config.maxModelLen ?? contextLength;
  }
  if (streaming.sinks + streaming.window > contextLength) {
    throw invalidArgument(`StreamingLLM's sinks (${streaming.sinks}) and window (${streaming.window}) exceed ${what} context length (${contextLength})`);
  }
  return config.maxModelLen ?? STREAMING_MAX_MODEL_LEN;
}

/** Methods that read a model directory given as speculative.model: a draft model, or heads. */
const WITH_MODEL: readonly SpeculativeMethod[] = ['draft', 'medusa', 'eagle', 'eagle3'];
/** Methods whose drafts come from a head over the target's hidden states, drafting chains or trees. */
const HEAD_METHODS: readonly SpeculativeMethod[] = ['eagle', 'eagle3', 'mtp'];

/** The speculative config with its defaults; a draft model without a method means method `draft`. */
function resolveSpeculativeConfig(options: Partial<SpeculativeConfig>): SpeculativeConfig {
  const given = stripUndefined(options);
  const method = given.method ?? (given.model ? 'draft' : undefined);
  if (method === undefined || !SPECULATIVE_METHODS.includes(method)) {
    throw invalidArgument(`speculative.method must be one of ${SPECULATIVE_METHODS.join(', ')} (got ${method}); --speculative-method METHOD, or --speculative-model DIR`);
  }
  const config: SpeculativeConfig = { ...DEFAULT_SPECULATIVE_CONFIG, ...given, method };
  const positiveInt = (name: keyof SpeculativeConfig, v: unknown) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw invalidArgument(`speculative.${name} must be a positive integer (got ${v})`);
  };
  positiveInt('numSpeculativeTokens', config.numSpeculativeTokens);
  positiveInt('ngramMin', config.ngramMin);
  positiveInt('ngramMax', config.ngramMax);
  positiveInt('ngramBranches', config.ngramBranches);
  positiveInt('treeWidth', config.treeWidth);
  if (config.disableByBatchSize !== null) positiveInt('disableByBatchSize', config.disableByBatchSize);
  const synthetic = config.syntheticAcceptedDrafts;
  if (synthetic !== null && !(Number.isInteger(synthetic) && synthetic >= 0 && synthetic <= config.numSpeculativeTokens)) {
    throw invalidArgument(`speculative.syntheticAcceptedDrafts must be an integer from 0 to numSpeculativeTokens ${config.numSpeculativeTokens} (got ${synthetic})`);
  }
  if (config.ngramMin > config.ngramMax) throw invalidArgument(`speculative.ngramMin ${config.ngramMin} is more than ngramMax ${config.ngramMax}`);
  if (WITH_MODEL.includes(method) && !config.model) {
    throw invalidArgument(`speculative method ${method} needs ${method === 'draft' ? 'a draft model' : "the heads' directory"} (speculative.model, --speculative-model DIR)`);
  }
  if (!WITH_MODEL.includes(method) && config.model) throw invalidArgument(`speculative.model is only for methods ${WITH_MODEL.join(', ')}; method ${method} needs no model`);
  if (method !== 'medusa' && config.tree !== null) throw invalidArgument('speculative.tree (--speculative-tree) is Medusa\'s static tree: only for method medusa');
  if (config.tree !== null) staticTree(config.tree, config.numSpeculativeTokens);
  if (config.treeWidth !== 1 && !HEAD_METHODS.includes(method)) throw invalidArgument(`speculative.treeWidth (--speculative-tree-width) is for methods ${HEAD_METHODS.join(', ')}`);
  if (config.treeWidth > MAX_TOP_LOGPROBS) throw invalidArgument(`speculative.treeWidth must be at most ${MAX_TOP_LOGPROBS} (got ${config.treeWidth})`);
  if ((method === 'self') !== (config.selfSpecLayers !== null)) {
    throw invalidArgument(method === 'self' ? 'speculative method self needs the draft\'s layer count (speculative.selfSpecLayers, --self-spec-layers L)' : 'speculative.selfSpecLayers (--self-spec-layers) is only for method self');
  }
  if (config.selfSpecLayers !== null) positiveInt('selfSpecLayers', config.selfSpecLayers);
  return config;
}

/** A model ready to run on a backend: everything but the KV pool and the scheduler. */
export interface LoadedModel {
  config: EngineConfig;
  /** Where the model's files were read from: config.model (a directory or GGUF file), or the Hugging Face cache's snapshot of the repo id it names. */
  modelPath: string;
  /** The repo id as given, or the model directory's or GGUF file's name. */
  modelName: string;
  modelConfig: ModelConfig;
  tokenizer: Tokenizer | null;
  eosTokenIds: number[];
  samplingDefaults: Partial<SamplingParams>;
  maxModelLen: number;
  backend: Backend;
  model: CausalLM;
  /** The linear layers holding LoRA slots; null when LoRA is not enabled. */
  loraTargets: LoraTarget[] | null;
  /** The decoder layers whose weights stream from host memory (`cpuOffloadGb`), and their stream; null: none. */
  offload: { layers: number[]; stream: WeightStream } | null;
  /** The other ranks of a parallel run (this thread is rank 0); null on one device. */
  ranks: Ranks | null;
  /**
   * Every layer's KV spec, whichever pipeline stage `model` runs (with several stages, as the
   * unsharded model declares them): what decides which blocks a sequence still needs.
   */
  allKvLayers: readonly LayerKvSpec[];
}

export async function loadModel(options: EngineOptions): Promise<LoadedModel> {
  const requested = resolveEngineConfig(options);
  const { path: modelPath, name: modelName } = await locateModel(requested.model, { showProgress: requested.showProgress });
  const files = openModelFiles(modelPath);
  const architecture = modelArchitectureOf(files);
  const modelConfig = architecture.config;
  const generation = readGenerationConfig(files, modelConfig);
  const tokenizer = loadTokenizerIfPresent(files);
  const maxModelLen = resolveMaxModelLen(requested, modelConfig.contextLength, "the model's");
  const stages = requested.pipelineParallelSize;
  // This thread is rank 0: the first stage's first tensor-parallel rank (parallel/rank-layout.ts).
  const model = createTargetModel(architecture, maxModelLen, requested, pipelineStage(modelConfig.numLayers, 0, stages));
  const allKvLayers = stages === 1 ? model.kvLayers : createTargetModel(architecture, maxModelLen, requested).kvLayers;
  const config = keepsSequenceState(allKvLayers) ? withSequenceStates(requested, modelConfig.modelType) : requested;
  if (config.loadFormat === 'dummy' && architecture.quantization !== null) {
    throw invalidArgument(`--load-format dummy makes 16-bit weights, not ${architecture.quantization.method} ones: drop quantization_config from ${modelPath}/config.json, and use --quantization for quantized dummy weights`);
  }
  if (config.quantization === 'mxfp4' && !model.parameters().some((p) => p.access?.kind === 'expert')) {
    throw invalidArgument(`--quantization mxfp4 quantizes routed MoE experts, and ${modelPath} has none; use fp8, int8, int4, nf4 or llm-int8 for its linear layers`);
  }
  // A parallel run's other ranks load their shards in worker threads or processes while this thread loads rank 0's.
  const { ranks, backend } =
    config.tensorParallelSize * stages > 1 ? await startRanks(config, modelPath, maxModelLen) : { ranks: null, backend: await selectBackend(config.backend) };
  try {
    const offload = config.cpuOffloadGb > 0 ? offloadLayers(model, backend, config) : null;
    loadModelWeights(model, files, architecture, config, backend, { rank: 0, size: config.tensorParallelSize, expertParallel: config.enableExpertParallel });
    await ranks?.ready();
    // Slots are allocated before the KV pool is sized from what memory is left.
    const loraTargets = config.enableLora ? enableLora(model, backend, config) : null;
    return {
      config,
      modelPath,
      modelName,
      modelConfig,
      tokenizer,
      eosTokenIds: generation.eosTokenIds,
      samplingDefaults: generation.defaults,
      maxModelLen,
      backend,
      model,
      loraTargets,
      offload,
      ranks,
      allKvLayers,
    };
  } catch (error) {
    backend.dispose();
    await ranks?.close();
    throw error;
  }
}

/**
 * Marks the decoder layers of `model`'s stage that `config.cpuOffloadGb` GiB of host memory holds
 * to stream from there (before loading): on every rank of a parallel run, its own shard of them
 * (`layers` index the stage's layers).
 */
export function offloadLayers(model: CausalLM, backend: Backend, config: EngineConfig): NonNullable<LoadedModel['offload']> {
  if (model.layerParameters === undefined || model.offloadLayers === undefined) throw invalidArgument(`weight offload (cpuOffloadGb) is not supported for ${model.config.modelType} models`);
  const layers = layersToOffload(model.layerParameters(), config.cpuOffloadGb, config.tensorParallelSize);
  return { layers, stream: model.offloadLayers(backend, layers) };
}

/** Reads `model`'s weights (its tensor-parallel shard of them) from the model's checkpoint, or random ones (--load-format dummy). */
export function loadModelWeights(model: CausalLM, files: ModelFiles, architecture: ModelArchitecture, config: EngineConfig, backend: Backend, shard: TensorParallelShard): void {
  const sparsity = resolveSparsity(architecture.sparsity, config.sparsity);
  if (sparsity !== null && config.quantization !== null) throw invalidArgument(`${files.path} is ${sparsity.pattern} sparse, which runs 16-bit weights: leave --quantization ${config.quantization} out`);
  if (config.loadFormat === 'dummy') loadDummyWeights(model, architecture.config.dtype, backend, config.seed, config.quantization, shard, sparsity);
  else loadWeightsWithProgress(model, withSparsity(withQuantization(openForLayout(files, architecture, shard, sparsity), architecture.quantization, config.quantization), sparsity), backend, { showProgress: config.showProgress, shard });
}

/** The model's checkpoint; a GGUF file's linear layers dequantized where its int8/int4 layouts cannot run (tensor parallelism, 2:4 sparsity). */
function openForLayout(files: ModelFiles, architecture: ModelArchitecture, shard: TensorParallelShard, sparsity: CheckpointSparsity | null): Checkpoint {
  const ckpt = openModelCheckpoint(files, architecture);
  return files.format === 'gguf' && (shard.size > 1 || sparsity !== null) ? withLinearsDequantized(ckpt) : ckpt;
}

/** Gives every adaptable linear layer its LoRA slots; a family without any cannot serve adapters. */
function enableLora(model: CausalLM, backend: Backend, config: EngineConfig): LoraTarget[] {
  const targets = model.loraTargets?.() ?? [];
  if (targets.length === 0) throw invalidArgument(`LoRA adapters are not supported for ${model.config.modelType} models`);
  for (const target of targets) target.enableLora(backend, config.maxLoras, config.maxLoraRank);
  return targets;
}

/**
 * A draft model for speculative decoding, loaded on the target's backend: checked to give logits
 * over the same token ids (the same vocabulary, token for token) and to cover the target's context.
 */
function loadDraftModel(files: ModelFiles, target: LoadedModel): CausalLM {
  const dir = files.path;
  const architecture = modelArchitectureOf(files);
  const draftConfig = architecture.config;
  const targetVocab = target.modelConfig.vocabSize;
  if (draftConfig.vocabSize !== targetVocab) {
    throw invalidModel(`the draft model ${dir} has a vocabulary of ${draftConfig.vocabSize} tokens and the target ${targetVocab}: a draft model must share the target's tokenizer`);
  }
  const tokenizer = loadTokenizerIfPresent(files);
  if ((tokenizer === null) !== (target.tokenizer === null)) {
    throw invalidModel(`only one of the draft model ${dir} and the target has a tokenizer, so Keel cannot check that they share their tokenizer`);
  }
  const difference = tokenizer && target.tokenizer!.vocabularyDifference(tokenizer);
  if (difference) throw invalidModel(`the draft model ${dir} does not share the target's tokenizer: ${difference}`);
  const { config, backend } = target;
  if (streamingOf(config) === null && draftConfig.contextLength < target.maxModelLen) {
    throw invalidArgument(`the draft model ${dir} covers ${draftConfig.contextLength} positions, fewer than the max model length ${target.maxModelLen}; lower --max-model-len`);
  }
  resolveMaxModelLen(config, draftConfig.contextLength, `the draft model ${dir}'s`);
  const model = createModel(architecture, target.maxModelLen, streamingOf(config));
  // --quantization is the target's: a draft model is read in its checkpoint's own format.
  if (config.loadFormat === 'dummy') loadDummyWeights(model, draftConfig.dtype, backend, config.seed);
  else loadWeightsWithProgress(model, withQuantization(openModelCheckpoint(files, architecture), architecture.quantization, null), backend, { showProgress: config.showProgress });
  return model;
}

/**
 * Medusa heads for the target, in their authors' format: config.json's medusa_num_heads and
 * medusa_num_layers, the weights in medusa_lm_head.safetensors (or model.safetensors), checked
 * against the target's hidden size and vocabulary.
 */
function loadMedusaHeads(dir: string, target: LoadedModel): MedusaHeads {
  const configPath = join(dir, 'config.json');
  const config = parseMedusaConfig(JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>, configPath);
  if (!existsSync(join(dir, 'medusa_lm_head.safetensors')) && existsSync(join(dir, 'medusa_lm_head.pt'))) {
    throw invalidModel(`${dir} holds its Medusa heads as medusa_lm_head.pt (a pickle, which Keel does not read): save the state dict as medusa_lm_head.safetensors (safetensors.torch.save_file)`);
  }
  const ckpt = openCheckpointNamed(dir, ['medusa_lm_head.safetensors']);
  try {
    const heads = MedusaHeads.forCheckpoint(config, ckpt, target.modelConfig);
    if (target.config.loadFormat === 'dummy') loadDummyWeights(heads, target.modelConfig.dtype, target.backend, target.config.seed);
    else loadWeightsWithProgress(heads, ckpt, target.backend, { showProgress: target.config.showProgress });
    return heads;
  } finally {
    ckpt.close();
  }
}

/**
 * The head of a head method (EAGLE, EAGLE-3, MTP), checked against the target; null for other
 * methods. Heads attend to every earlier position, so StreamingLLM's window cannot bound them.
 */
function loadHead(speculative: SpeculativeConfig, dir: string | null, target: LoadedModel): DraftHead | null {
  const { method } = speculative;
  if (!HEAD_METHODS.includes(method)) return null;
  if (streamingOf(target.config) !== null) throw invalidArgument(`--speculative-method ${method} cannot run with StreamingLLM: its head attends to every earlier position`);
  const head = method === 'mtp' ? loadMtpHead(target, () => openModelFiles(target.modelPath).openCheckpoint()) : loadEagleHead(dir!, method === 'eagle3' ? 3 : 1, target);
  checkHeadTarget(head, target.model);
  return head;
}

/** Self-speculation's draft: the target's first `numLayers` layers, its final norm and LM head. */
function earlyExitDraft(model: CausalLM, numLayers: number): CausalLM {
  if (model.earlyExit === undefined) throw invalidArgument(`self-speculation (--speculative-method self) is not supported for ${model.config.modelType} models`);
  return model.earlyExit(numLayers);
}

export async function loadEngine(options: EngineOptions): Promise<LoadedEngine> {
  // The draft model is found (a directory, or a repo id from the cache or hub) before the target
  // loads, so a wrong name fails at once.
  const { speculative, showProgress, dataParallelSize } = resolveEngineConfig(options);
  if (dataParallelSize > 1) {
    throw invalidArgument(`dataParallelSize ${dataParallelSize}: one engine loads here; replicas run behind \`keel serve\` (EngineReplicas), each an engine of its own (docs/parallelism.md)`);
  }
  const draftPath = speculative?.model ? (await locateModel(speculative.model, { showProgress })).path : null;
  // The draft model's files are opened before the target loads, so that a bad one fails fast.
  const draftFiles = draftPath !== null && speculative?.method === 'draft' ? openModelFiles(draftPath) : null;
  const loaded = await loadModel(options);
  const { config, modelConfig, backend, model, loraTargets, offload } = loaded;
  try {
    const draft = draftFiles === null ? null : loadDraftModel(draftFiles, loaded);
    const medusa = draftPath === null || speculative?.method !== 'medusa' ? null : new MedusaProposer(loadMedusaHeads(draftPath, loaded), speculative.tree ?? DEFAULT_MEDUSA_TREE);
    const head = speculative === null ? null : loadHead(speculative, draftPath, loaded);
    // The backends verify draft trees on attention layers only: over latent attention (DeepSeek, the MTP head's too) drafts are chains.
    if (speculative !== null && draftsTrees(speculative) && [...loaded.allKvLayers, ...(head === null ? [] : [head.kvLayer])].some((spec) => spec.kind === 'mla')) {
      throw invalidArgument(`${treeOption(speculative)}: multi-head latent attention has no tree attention, so drafts must be chains`);
    }
    const selfDraft = speculative?.method === 'self' ? earlyExitDraft(model, speculative.selfSpecLayers!) : null;
    const headLayers = head === null ? [] : HeadProposer.cacheLayers(head);
    // The draft model's and the head's pools hang off the same block ids: a block holds every model's K/V.
    // Layers are grouped by what they read (kvCacheGroups) over every stage's layers and the draft's and head's.
    const draftLayers = draft?.kvLayers ?? [];
    const { retentions, groupOf } = kvCacheGroups([...loaded.allKvLayers, ...draftLayers, ...headLayers], streamingOf(config));
    const draftStart = loaded.allKvLayers.length;
    const caches = {
      target: { layers: model.kvLayers, groups: groupOf.slice(0, model.kvLayers.length) },
      draft: { layers: draftLayers, groups: groupOf.slice(draftStart, draftStart + draftLayers.length) },
      head: { layers: headLayers, groups: groupOf.slice(draftStart + draftLayers.length) },
    };
    // An 8-bit cache stores the head's attention K/V in that dtype too; its rows stay 16-bit (kvLayerDtype).
    const kvDtype = resolveKvCacheDtype(config.kvCacheDtype);
    const bytesPerBlock = Object.values(caches).reduce((sum, c) => sum + kvBytesPerBlock(c.layers, config.blockSize, backend.kvElementBytes, kvDtype, c.groups), 0);
    // The sequences' state slots (with their snapshots under speculation), the prefix cache's state checkpoints, then the padding rows' scratch slot.
    const stateLayout = stateSlotLayout(model.kvLayers, config);
    const deviceStateSlots = stateLayout.total;
    const scratchStateSlot = stateLayout.scratch;
    const stateBytes = deviceStateSlots * stateBytesPerSlot(model.kvLayers);
    const numKvBlocks = config.numKvBlocks ?? kvBlocksForBudget(backend, loaded.ranks, config, retentions, loaded.maxModelLen, bytesPerBlock, stateBytes);
    const poolTokens = numKvBlocks * config.blockSize;
    // One block past the pool belongs to no sequence: graph steps pad their batch with rows that
    // write there, and block tables name it in place of blocks freed behind a sliding window.
    const nullBlock = numKvBlocks;
    // Host block ids name a block on every rank of a parallel run, and each rank's host spaces hold
    // their blocks of its own shard in the memory given: the rank with the largest blocks bounds them.
    const hostBytesPerBlock = Math.max(bytesPerBlock, loaded.ranks?.largestKvBytesPerBlock ?? 0);
    const numSwapBlocks = config.preemptionMode === 'swap' ? hostBlocksFor('swapSpace', config.swapSpace, hostBytesPerBlock) : 0;
    const numHostCacheBlocks = config.kvOffloadGb > 0 ? hostBlocksFor('kvOffloadGb', config.kvOffloadGb, hostBytesPerBlock) : 0;
    const kv = new KvCacheManager(new BlockPool(numKvBlocks, config.enablePrefixCaching), {
      blockSize: config.blockSize,
      enablePrefixCaching: config.enablePrefixCaching,
      groups: retentions,
      nullBlock,
      swapPool: numSwapBlocks > 0 ? new BlockPool(numSwapBlocks, false) : null,
      // A head rewrites the entry of each sequence's last computed token (head-proposer.ts).
      lookback: head === null ? 0 : 1,
      hostCache: numHostCacheBlocks > 0 ? new HostPrefixCache(numHostCacheBlocks) : null,
      stateSlots: stateLayout.sequences,
      stateCheckpoints: stateLayout.checkpoints > 0 ? new StateCheckpoints(stateLayout.firstCheckpoint, stateLayout.checkpoints) : null,
    });
    // One sequence must fit in the pool on its own, or it would preempt itself forever.
    const fits = (length: number) => kv.blocksHeldAtOnce(length, config.maxNumBatchedTokens) <= numKvBlocks;
    if (config.maxModelLen !== null && !fits(config.maxModelLen)) {
      throw invalidArgument(`maxModelLen ${config.maxModelLen} does not fit in the KV pool (${numKvBlocks} blocks of ${config.blockSize} = ${poolTokens} tokens)`);
    }
    const maxModelLen = fits(loaded.maxModelLen) ? loaded.maxModelLen : Math.min(loaded.maxModelLen, poolTokens);
    if (config.showProgress) {
      process.stderr.write(
        `keel: ${backend.name} backend, KV cache (${kvDtype}) ${numKvBlocks} blocks × ${config.blockSize} tokens = ${poolTokens} tokens ` +
          `(${((numKvBlocks * bytesPerBlock) / 2 ** 30).toFixed(2)} GiB), max model length ${maxModelLen}` +
          (stateLayout.sequences > 0
            ? `, ${stateLayout.sequences} sequence state slots` + (stateLayout.checkpoints > 0 ? ` and ${stateLayout.checkpoints} prefix-cache state checkpoints` : '') + ` (${deviceStateSlots} slots, ${(stateBytes / 2 ** 30).toFixed(2)} GiB)`
            : '') +
          (numSwapBlocks > 0 ? `, swap space ${numSwapBlocks} blocks (${((numSwapBlocks * bytesPerBlock) / 2 ** 30).toFixed(2)} GiB)` : '') +
          (numHostCacheBlocks > 0 ? `, host prefix-cache tier ${numHostCacheBlocks} blocks (${((numHostCacheBlocks * bytesPerBlock) / 2 ** 30).toFixed(2)} GiB)` : '') +
          (offload === null
            ? ''
            : `, layers ${offload.layers.join(', ')} of ${modelConfig.numLayers} streamed from host memory ` +
              `(${(offload.stream.hostBytes / 2 ** 30).toFixed(2)} GiB there, ${(offload.stream.deviceBytes / 2 ** 30).toFixed(2)} GiB of device buffers` +
              `${loaded.ranks === null ? '' : ` on rank 0; ${(loaded.ranks.weightHostBytes / 2 ** 30).toFixed(2)} GiB on the other ranks, each streaming its own shard`})`) +
          '\n',
      );
    }
    const microBatches = pipelineMicroBatchesOf(config);
    const graphs = recordsDecodeGraphs(backend, config, offload) ? { maxBatchSize: config.maxNumSeqs, scratchBlock: nullBlock, scratchStateSlot } : null;
    // Host spaces hold blocks in the cache's own dtype (int8 scales included), so copies move bytes as they are.
    const kvLayout = (numBlocks: number, c: { layers: CausalLM['kvLayers']; groups: number[] }) => ({ numBlocks, blockSize: config.blockSize, layers: c.layers, groups: c.groups, dtype: kvDtype, stateSlots: deviceStateSlots });
    const cache = backend.createKvCache(kvLayout(numKvBlocks + 1, caches.target));
    loaded.ranks?.createCaches(numKvBlocks + 1, config.blockSize, kvDtype, { numSwapBlocks, numHostCacheBlocks }, deviceStateSlots);
    // Self-speculation's draft runs on the target's own cache (its layers are the target's first ones).
    const draftModel = draft ? { model: draft, cache: backend.createKvCache(kvLayout(numKvBlocks + 1, caches.draft)) } : selfDraft && { model: selfDraft, cache };
    const headProposer = head && new HeadProposer(head, backend.createKvCache(kvLayout(numKvBlocks + 1, caches.head)), config.blockSize, speculative!.treeWidth);
    // One host space per cache with blocks of its own, each block holding what a device block holds in all its pool arrays.
    const hostSpaces = (numBlocks: number) => {
      if (numBlocks === 0) return null;
      const create = (c: { layers: CausalLM['kvLayers']; groups: number[] }) => backend.createSwapSpace(kvLayout(numBlocks, c));
      return { target: create(caches.target), draft: draft && create(caches.draft), head: head && create(caches.head) };
    };
    const swap = hostSpaces(numSwapBlocks);
    const hostCache = hostSpaces(numHostCacheBlocks);
    const scheduler = new Scheduler(
      {
        maxNumSeqs: config.maxNumSeqs,
        maxNumBatchedTokens: config.maxNumBatchedTokens,
        blockSize: config.blockSize,
        maxModelLen: maxModelLen,
        ...(loraTargets === null ? {} : { maxLoras: config.maxLoras }),
        microBatches,
      },
      kv,
    );
    const loras = loraTargets === null ? null : new LoraRegistry(loraTargets, config.maxLoraRank);
    for (const { name, path } of config.loraModules) loras!.load(name, path);
    const engine = new LLMEngine({
      scheduler,
      kv,
      runner: new ModelRunner(
        backend,
        model,
        cache,
        config.blockSize,
        graphs,
        { draft: draftModel, medusa, head: headProposer },
        swap,
        loraTargets === null ? null : new LoraSlots(backend, loraTargets, config.maxLoras),
        hostCache,
        loaded.ranks,
        microBatches,
      ),
      tokenizer: loaded.tokenizer,
      vocabSize: modelConfig.vocabSize,
      eosTokenIds: loaded.eosTokenIds,
      maxModelLen,
      numKvBlocks,
      defaultSeed: config.seed,
      asyncScheduling: config.asyncScheduling,
      microBatches,
      // Cached blocks hold the draft model's K/V too: both models' salts tell them apart.
      prefixCacheSalt: (promptLength) => {
        const salts = [model, ...(draft ? [draft] : [])].map((m) => m.prefixCacheSalt?.(promptLength) ?? null);
        return salts.every((salt) => salt === null) ? null : salts.join('|');
      },
      speculative,
      servesLora: loraTargets !== null,
    });
    return { ...loaded, maxModelLen, engine, numKvBlocks, loras };
  } catch (error) {
    backend.dispose();
    await loaded.ranks?.close();
    throw error;
  }
}

/**
 * The engine settings for a model whose layers keep a per-sequence state (Gated DeltaNet, Mamba-2): a
 * sequence's history lives in its state slot, not in KV blocks, so what needs the history of a
 * prefix or a copy of a sequence is refused by name (swapping, the host tier of the prefix cache),
 * and prefix caching, which keeps states at cached block boundaries in state checkpoints
 * (`StateCheckpoints`), turns itself off with a notice when there are none.
 */
export function withSequenceStates(config: EngineConfig, modelType: string): EngineConfig {
  const refuse = (what: string) => {
    throw invalidArgument(`${what} is not supported for ${modelType}: its recurrent layers (Gated DeltaNet, Mamba-2) keep a state per sequence, not per token`);
  };
  // A verification runs the drafts through the state, which goes back to its snapshot unless all
  // were kept, and the kept tokens run again: a chain of n-gram or MTP drafts. The MTP layer is
  // full attention whose K/V and feature rows the rerun rewrites before the next catch-up reads
  // them. A draft model would need its own state rewound, EAGLE and Medusa heads are not published
  // for these models, and a tree's branches would each need a state.
  const spec = config.speculative;
  if (spec !== null && ((spec.method !== 'ngram' && spec.method !== 'mtp') || draftsTrees(spec))) {
    refuse(`speculative decoding other than n-gram and MTP chains (${draftsTrees(spec) ? treeOption(spec) : `--speculative-method ${spec.method}`})`);
  }
  if (config.preemptionMode === 'swap') refuse('preemptionMode swap');
  if (config.kvOffloadGb > 0) refuse('the host tier of the prefix cache (kvOffloadGb)');
  // A prefix hit needs the state after the prefix, which only a state checkpoint keeps.
  if (!config.enablePrefixCaching || config.numStateCheckpoints > 0) return config;
  if (config.showProgress) process.stderr.write(`keel: prefix caching is off for ${modelType}: its recurrent state of a prefix is kept in no KV block, and numStateCheckpoints is 0\n`);
  return { ...config, enablePrefixCaching: false };
}

/** Whether the engine replays its decode steps as graphs (the backend records them, and nothing below rules them out). */
export function recordsDecodeGraphs(backend: Backend, config: EngineConfig, offload: LoadedModel['offload']): boolean {
  // A streamed layer's copies wait on events across streams, which Keel does not record into graphs.
  // With micro-batches in flight the first stage's forward is cut in two around another micro-batch's logits, which no graph of one step holds.
  return backend.recordsGraphs && !config.enforceEager && offload === null && pipelineMicroBatchesOf(config) === 1;
}

/**
 * Blocks the memory budget holds, but no more than `maxNumSeqs` sequences of `maxModelLen` tokens
 * can hold at once: a tiny model on a large GPU would otherwise ask for hundreds of millions of blocks.
 * Block ids name a block on every rank of a parallel run: the tightest rank's budget bounds them.
 */
function kvBlocksForBudget(backend: Backend, ranks: Ranks | null, config: EngineConfig, groups: readonly (KvRetention | null)[], maxModelLen: number, bytesPerBlock: number, stateBytes: number): number {
  const affordable = Math.min(Math.floor((backend.kvCacheBudgetBytes(config) - stateBytes) / bytesPerBlock), ranks?.kvBlocksAffordable ?? Infinity);
  if (affordable < 1) throw new KeelError('unavailable', `no memory is left for the KV cache (${bytesPerBlock} bytes per block)`);
  return Math.min(affordable, config.maxNumSeqs * blocksHeldAtOnce(groups, config.blockSize, maxModelLen, config.maxNumBatchedTokens));
}

/** Host blocks in `gib` GiB of host memory (option `name`); at least one, or it would never be used. */
function hostBlocksFor(name: 'swapSpace' | 'kvOffloadGb', gib: number, bytesPerBlock: number): number {
  const blocks = Math.floor((gib * 2 ** 30) / bytesPerBlock);
  if (blocks < 1) throw invalidArgument(`${name} ${gib} GiB holds no KV block of ${bytesPerBlock} bytes`);
  return blocks;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
