import type { ParseArgsConfig } from 'node:util';
import { SPECULATIVE_METHODS, type EngineConfig, type EngineOptions, type LoraModule, type SpeculativeConfig } from '../config.ts';
import { DEFAULT_ENGINE_CONFIG, DEFAULT_SPECULATIVE_CONFIG, MAX_LORA_RANK, STREAMING_MAX_MODEL_LEN } from '../config.ts';
import { invalidArgument } from '../errors.ts';
import { KV_CACHE_DTYPE_NAMES } from '../step/kv-cache-layout.ts';
import { LOAD_TIME_QUANTIZATIONS } from '../tensor/quantize-rtn.ts';
import { SPARSITY_PATTERNS } from '../tensor/sparse24.ts';

/** Engine flags shared by every command that loads a model; each maps onto one EngineConfig field. */
export const ENGINE_FLAGS = {
  model: { type: 'string' },
  backend: { type: 'string' },
  'load-format': { type: 'string' },
  quantization: { type: 'string' },
  sparsity: { type: 'string' },
  'kv-cache-dtype': { type: 'string' },
  'block-size': { type: 'string' },
  'num-kv-blocks': { type: 'string' },
  'gpu-memory-utilization': { type: 'string' },
  'cpu-kv-cache-bytes': { type: 'string' },
  'max-model-len': { type: 'string' },
  'max-num-seqs': { type: 'string' },
  'max-num-batched-tokens': { type: 'string' },
  'no-prefix-caching': { type: 'boolean' },
  'num-state-checkpoints': { type: 'string' },
  'enforce-eager': { type: 'boolean' },
  'no-async-scheduling': { type: 'boolean' },
  seed: { type: 'string' },
  'no-progress': { type: 'boolean' },
  'speculative-method': { type: 'string' },
  'speculative-model': { type: 'string' },
  'speculative-tree': { type: 'string' },
  'num-speculative-tokens': { type: 'string' },
  'ngram-min': { type: 'string' },
  'ngram-max': { type: 'string' },
  'ngram-branches': { type: 'string' },
  'speculative-tree-width': { type: 'string' },
  'self-spec-layers': { type: 'string' },
  'speculative-disable-by-batch-size': { type: 'string' },
  'streaming-sinks': { type: 'string' },
  'streaming-window': { type: 'string' },
  'sparse-attention': { type: 'string' },
  'sparse-token-budget': { type: 'string' },
  'sparse-sink-tokens': { type: 'string' },
  'sparse-window-tokens': { type: 'string' },
  'sparse-dense-layers': { type: 'string' },
  'enable-lora': { type: 'boolean' },
  'lora-modules': { type: 'string', multiple: true },
  'max-loras': { type: 'string' },
  'max-lora-rank': { type: 'string' },
  'preemption-mode': { type: 'string' },
  'swap-space': { type: 'string' },
  'kv-offload-gb': { type: 'string' },
  'cpu-offload-gb': { type: 'string' },
  'tensor-parallel-size': { type: 'string' },
  'pipeline-parallel-size': { type: 'string' },
  'pipeline-micro-batches': { type: 'string' },
  'enable-expert-parallel': { type: 'boolean' },
  'data-parallel-size': { type: 'string' },
  'max-replica-restarts': { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

export const ENGINE_FLAGS_HELP = `Engine options:
  --model DIR|FILE.gguf|ORG/NAME[@REV]
                                 a Hugging Face model directory; a GGUF file (llama, mistral,
                                 mixtral, qwen2, qwen3, qwen MoE; quantized weights dequantized to
                                 bf16); or a repo id: found in the Hugging Face cache (HF_HUB_CACHE,
                                 HF_HOME), else downloaded into it (HF_TOKEN; HF_HUB_OFFLINE=1: the
                                 cache only) (default: keel-tiny)
  --backend auto|cpu|cuda        default ${DEFAULT_ENGINE_CONFIG.backend}: CUDA when a GPU is usable, else CPU
  --load-format auto|dummy       dummy: random weights with the config's architecture
  --quantization fp8|int8|int4|mxfp4|nf4|llm-int8|aqlm-2x8|aqlm-1x16
                                 quantize a 16-bit checkpoint at load (round to nearest): its linear
                                 layers (int4 in groups of 128; nf4: bitsandbytes NF4, blocks of 64;
                                 llm-int8: int8 weights run by LLM.int8(), outlier threshold 6), with
                                 fp8/int8/int4 routed MoE experts too, or with mxfp4 its routed MoE
                                 experts only; aqlm-2x8/aqlm-1x16: random AQLM linear layers, with
                                 --load-format dummy only (real ones: keel quantize --method vq);
                                 quantized checkpoints (GPTQ, AWQ, compressed-tensors, fp8, gpt-oss's
                                 MXFP4, bitsandbytes, AQLM 1x16 and 2x8) are read as they are
                                 (docs/quantization.md)
  --sparsity 2:4                 run the linear layers as 2:4 sparse (cuSPARSELt on CUDA); every one
                                 must be 2:4 (keel prune writes such checkpoints). Implied by a
                                 checkpoint whose config declares it (docs/sparsity.md)
  --kv-cache-dtype auto|fp8|fp8_e4m3|int8|int4  how the KV cache stores keys and values: auto,
                                 the backend's dtype; fp8 (= fp8_e4m3), e4m3 with a per-layer scale
                                 (the checkpoint's k_scale/v_scale, else 1); int8, a scale per token
                                 and kv head (DeepSeek-V3.2's indexer keys: a scale per key in
                                 either); int4, two codes a byte with a scale and minimum per token
                                 and kv head (attention layers; not MLA). 8-bit fits twice the
                                 tokens of bf16, int4 about four times (default auto)
  --block-size N                 tokens per KV block (default ${DEFAULT_ENGINE_CONFIG.blockSize})
  --num-kv-blocks N              KV blocks in the pool (default: sized from memory)
  --gpu-memory-utilization F     fraction of GPU memory Keel may use (default ${DEFAULT_ENGINE_CONFIG.gpuMemoryUtilization})
  --cpu-kv-cache-bytes N         KV pool size on the CPU backend (default ${DEFAULT_ENGINE_CONFIG.cpuKvCacheBytes})
  --max-model-len N              longest prompt + output (default: max_position_embeddings;
                                 with --streaming-* ${STREAMING_MAX_MODEL_LEN})
  --max-num-seqs N               most sequences per step (default ${DEFAULT_ENGINE_CONFIG.maxNumSeqs})
  --max-num-batched-tokens N     token budget per step (default ${DEFAULT_ENGINE_CONFIG.maxNumBatchedTokens})
  --no-prefix-caching            disable automatic prefix caching
  --num-state-checkpoints N      hybrid (linear-attention) models: states kept at cached block boundaries,
                                 each the size of a sequence's state slot; a prefix hit needs one
                                 (default ${DEFAULT_ENGINE_CONFIG.numStateCheckpoints}; 0: no prefix caching for them; docs/long-context.md)
  --enforce-eager                run decode steps op by op instead of replaying CUDA graphs
  --no-async-scheduling          read each step's tokens before launching the next
  --seed N                       seed for requests that bring none (default ${DEFAULT_ENGINE_CONFIG.seed})
  --no-progress                  no progress bar or start-up report on stderr
  --preemption-mode recompute|swap  how a sequence preempted for lack of KV blocks gets its KV back
                                 (default ${DEFAULT_ENGINE_CONFIG.preemptionMode}); swap: contexts longer than
                                 --max-num-batched-tokens go to host memory and back, shorter ones
                                 are recomputed (docs/long-context.md)
  --swap-space GiB               host memory (pinned on CUDA) for swapped-out KV, per rank of a parallel
                                 run (default ${DEFAULT_ENGINE_CONFIG.swapSpace})
  --kv-offload-gb GiB            host memory (pinned on CUDA) for a host tier of the prefix cache: blocks
                                 evicted from the GPU's are kept there and copied back on a hit
                                 instead of recomputed; per rank of a parallel run (default
                                 ${DEFAULT_ENGINE_CONFIG.kvOffloadGb}: none; docs/long-context.md)
  --cpu-offload-gb GiB           keep this much of the decoder layers' weights (whole layers, evenly spaced,
                                 counted at 16 bits) in host memory, each layer copied to the GPU while
                                 the one before it runs; per rank of a parallel run, of its shard
                                 (default ${DEFAULT_ENGINE_CONFIG.cpuOffloadGb}: none; no CUDA graphs with it)

Parallelism (docs/parallelism.md; TP × PP ranks: worker threads on the CPU backend, one worker
process per GPU on CUDA; multi-node from MASTER_ADDR, MASTER_PORT, NNODES, NODE_RANK):
  --tensor-parallel-size N       split every layer over N devices (default ${DEFAULT_ENGINE_CONFIG.tensorParallelSize})
  --pipeline-parallel-size N     split the layers into N consecutive stages, each on its own devices,
                                 activations passed from stage to stage (default ${DEFAULT_ENGINE_CONFIG.pipelineParallelSize})
  --pipeline-micro-batches N     micro-batches in flight at once over the stages, 1 to the stage count,
                                 each a disjoint set of the running sequences (default: the stage count)
  --enable-expert-parallel       MoE: whole experts placed across the tensor-parallel devices
  --data-parallel-size N         keel serve: N engine replicas (each TP × PP ranks) behind one endpoint,
                                 a process each (on CUDA, on its own TP × PP GPUs), the server routing
                                 each request by prefix affinity and load (default ${DEFAULT_ENGINE_CONFIG.dataParallelSize})
  --max-replica-restarts N       keel serve: times in a row a replica whose process died is started again,
                                 1 s apart doubling to 30 s (10 min of serving starts afresh); 0: never,
                                 it stays down while the others serve (default ${DEFAULT_ENGINE_CONFIG.maxReplicaRestarts})

Speculative decoding (docs/speculative-decoding.md; off unless a method or draft model is given):
  --speculative-method ngram|draft|medusa|eagle|eagle3|mtp|self  ngram: drafts looked up in the sequence's own
                                 tokens; draft: a draft model; medusa: Medusa heads drafting a tree verified in one
                                 pass; eagle, eagle3: an EAGLE-1/2 or EAGLE-3 head (authors' or speculators format);
                                 mtp: the checkpoint's own multi-token prediction layer (DeepSeek-V3, GLM); self: the
                                 target's first --self-spec-layers layers and its LM head
  --speculative-model DIR|ORG/NAME  the draft model, Medusa heads or EAGLE head, found as --model is (alone: --speculative-method draft)
  --speculative-tree JSON        Medusa's static tree as paths of candidate ranks, e.g. [[0],[1],[0,0]] (default: 15 drafts, 5 deep)
  --num-speculative-tokens K     most drafts per sequence and step (default ${DEFAULT_SPECULATIVE_CONFIG.numSpeculativeTokens})
  --ngram-min N                  shortest suffix n-gram lookup matches (default ${DEFAULT_SPECULATIVE_CONFIG.ngramMin})
  --ngram-max N                  longest suffix n-gram lookup matches (default ${DEFAULT_SPECULATIVE_CONFIG.ngramMax})
  --ngram-branches N             continuations of up to N earlier matches, verified as one draft tree (default ${DEFAULT_SPECULATIVE_CONFIG.ngramBranches}: a chain)
  --speculative-tree-width N     EAGLE/MTP heads: a tree keeping the N drafts of best path probability per depth
                                 (default ${DEFAULT_SPECULATIVE_CONFIG.treeWidth}: a chain)
  --self-spec-layers L           --speculative-method self: draft with the target's first L layers
  --speculative-disable-by-batch-size N  no speculation in steps with at least N running sequences

StreamingLLM (docs/long-context.md; both or neither): generation runs past the model's context
  --streaming-sinks S            every token attends to its sequence's first S tokens (attention sinks)
  --streaming-window W           and to its latest W tokens; the KV blocks between are freed

Sparse attention (docs/long-context.md): each decode reads only the KV blocks that matter
  --sparse-attention quest       Quest: per-block key summaries bound each block's scores, a decode
                                 attends to the best blocks within the budget (prefill stays dense;
                                 speculative verification attends sparsely too)
  --sparse-token-budget N        tokens a decode attends to per kv head, whole blocks (needed with quest)
  --sparse-sink-tokens S         first tokens' blocks always kept (default ${DEFAULT_ENGINE_CONFIG.sparseSinkTokens})
  --sparse-window-tokens W       latest tokens' blocks always kept (default ${DEFAULT_ENGINE_CONFIG.sparseWindowTokens})
  --sparse-dense-layers L,L,...  layers left dense, or none (default ${DEFAULT_ENGINE_CONFIG.sparseDenseLayers.join(',')})

LoRA adapters (docs/lora.md): a request names an adapter as its model; adapters and the base model batch together
  --lora-modules NAME=DIR ...    serve these PEFT adapters (adapter_config.json + adapter_model.safetensors),
                                 also as JSON {"name": NAME, "path": DIR}; implies --enable-lora
  --enable-lora                  serve adapters (loadable while serving: POST /v1/load_lora_adapter)
  --max-loras N                  adapters held on the GPU at once, LRU-paged (default ${DEFAULT_ENGINE_CONFIG.maxLoras})
  --max-lora-rank R              largest adapter rank accepted, at most ${MAX_LORA_RANK} (default ${DEFAULT_ENGINE_CONFIG.maxLoraRank})`;

type EngineFlagValues = {
  [K in keyof typeof ENGINE_FLAGS]?: (typeof ENGINE_FLAGS)[K]['type'] extends 'boolean' ? boolean : (typeof ENGINE_FLAGS)[K] extends { multiple: true } ? string[] : string;
};

export function engineConfigFromFlags(values: EngineFlagValues): EngineOptions {
  return {
    model: values.model,
    backend: oneOf('--backend', values.backend, ['auto', 'cpu', 'cuda'] as const),
    loadFormat: oneOf('--load-format', values['load-format'], ['auto', 'dummy'] as const),
    quantization: oneOf('--quantization', values.quantization, LOAD_TIME_QUANTIZATIONS),
    sparsity: oneOf('--sparsity', values.sparsity, SPARSITY_PATTERNS),
    kvCacheDtype: oneOf('--kv-cache-dtype', values['kv-cache-dtype'], KV_CACHE_DTYPE_NAMES),
    blockSize: integerFlag('--block-size', values['block-size']),
    numKvBlocks: integerFlag('--num-kv-blocks', values['num-kv-blocks']),
    gpuMemoryUtilization: numberFlag('--gpu-memory-utilization', values['gpu-memory-utilization']),
    cpuKvCacheBytes: integerFlag('--cpu-kv-cache-bytes', values['cpu-kv-cache-bytes']),
    maxModelLen: integerFlag('--max-model-len', values['max-model-len']),
    maxNumSeqs: integerFlag('--max-num-seqs', values['max-num-seqs']),
    maxNumBatchedTokens: integerFlag('--max-num-batched-tokens', values['max-num-batched-tokens']),
    enablePrefixCaching: values['no-prefix-caching'] ? false : undefined,
    numStateCheckpoints: integerFlag('--num-state-checkpoints', values['num-state-checkpoints']),
    enforceEager: values['enforce-eager'] ? true : undefined,
    asyncScheduling: values['no-async-scheduling'] ? false : undefined,
    seed: integerFlag('--seed', values.seed),
    showProgress: values['no-progress'] ? false : undefined,
    speculative: speculativeFromFlags(values),
    streamingSinks: integerFlag('--streaming-sinks', values['streaming-sinks']),
    streamingWindow: integerFlag('--streaming-window', values['streaming-window']),
    sparseAttention: oneOf('--sparse-attention', values['sparse-attention'], ['quest'] as const),
    sparseTokenBudget: integerFlag('--sparse-token-budget', values['sparse-token-budget']),
    sparseSinkTokens: integerFlag('--sparse-sink-tokens', values['sparse-sink-tokens']),
    sparseWindowTokens: integerFlag('--sparse-window-tokens', values['sparse-window-tokens']),
    sparseDenseLayers: layerListFlag('--sparse-dense-layers', values['sparse-dense-layers']),
    enableLora: values['enable-lora'] ? true : undefined,
    loraModules: values['lora-modules']?.map(loraModule),
    maxLoras: integerFlag('--max-loras', values['max-loras']),
    maxLoraRank: integerFlag('--max-lora-rank', values['max-lora-rank']),
    preemptionMode: oneOf('--preemption-mode', values['preemption-mode'], ['recompute', 'swap'] as const),
    swapSpace: numberFlag('--swap-space', values['swap-space']),
    kvOffloadGb: numberFlag('--kv-offload-gb', values['kv-offload-gb']),
    cpuOffloadGb: numberFlag('--cpu-offload-gb', values['cpu-offload-gb']),
    tensorParallelSize: integerFlag('--tensor-parallel-size', values['tensor-parallel-size']),
    pipelineParallelSize: integerFlag('--pipeline-parallel-size', values['pipeline-parallel-size']),
    pipelineMicroBatches: integerFlag('--pipeline-micro-batches', values['pipeline-micro-batches']),
    enableExpertParallel: values['enable-expert-parallel'] ? true : undefined,
    dataParallelSize: integerFlag('--data-parallel-size', values['data-parallel-size']),
    maxReplicaRestarts: integerFlag('--max-replica-restarts', values['max-replica-restarts']),
  };
}

/** A comma-separated list of layer indices, or `none` for the empty list. */
function layerListFlag(name: string, raw: string | undefined): number[] | undefined {
  if (raw === undefined) return undefined;
  if (raw.trim() === 'none') return [];
  return raw.split(',').map((part) => {
    const layer = Number(part.trim());
    if (part.trim() === '' || !Number.isInteger(layer) || layer < 0) throw invalidArgument(`${name} expects layer indices such as 0,1 (or none), got "${raw}"`);
    return layer;
  });
}

/** One --lora-modules value: NAME=DIR, or vLLM's JSON form {"name": ..., "path": ...}. */
function loraModule(value: string): LoraModule {
  if (value.trimStart().startsWith('{')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch (error) {
      throw invalidArgument(`--lora-modules ${value}: not valid JSON (${(error as Error).message})`);
    }
    const { name, path } = parsed as { name?: unknown; path?: unknown };
    if (typeof name !== 'string' || typeof path !== 'string') throw invalidArgument(`--lora-modules ${value}: the JSON form needs string "name" and "path"`);
    return { name, path };
  }
  const at = value.indexOf('=');
  if (at <= 0 || at === value.length - 1) throw invalidArgument(`--lora-modules expects NAME=DIR (got "${value}")`);
  return { name: value.slice(0, at), path: value.slice(at + 1) };
}

/** --speculative-tree: a JSON list of paths of ranks, as Medusa writes its trees ("[[0], [1], [0, 0]]"). */
function treeFlag(value: string | undefined): number[][] | undefined {
  if (value === undefined) return undefined;
  let tree: unknown;
  try {
    tree = JSON.parse(value);
  } catch {
    throw invalidArgument(`--speculative-tree must be JSON, a list of paths of ranks such as [[0], [1], [0, 0]] (got ${value})`);
  }
  if (!Array.isArray(tree) || !tree.every((path) => Array.isArray(path) && path.every((r) => typeof r === 'number'))) {
    throw invalidArgument(`--speculative-tree must be a list of paths of ranks such as [[0], [1], [0, 0]] (got ${value})`);
  }
  return tree as number[][];
}

/** The speculative options the flags give; undefined when no speculative flag is given. */
function speculativeFromFlags(values: EngineFlagValues): EngineOptions['speculative'] {
  const options = {
    method: oneOf('--speculative-method', values['speculative-method'], SPECULATIVE_METHODS),
    model: values['speculative-model'],
    tree: treeFlag(values['speculative-tree']),
    numSpeculativeTokens: integerFlag('--num-speculative-tokens', values['num-speculative-tokens']),
    ngramMin: integerFlag('--ngram-min', values['ngram-min']),
    ngramMax: integerFlag('--ngram-max', values['ngram-max']),
    ngramBranches: integerFlag('--ngram-branches', values['ngram-branches']),
    treeWidth: integerFlag('--speculative-tree-width', values['speculative-tree-width']),
    selfSpecLayers: integerFlag('--self-spec-layers', values['self-spec-layers']),
    disableByBatchSize: integerFlag('--speculative-disable-by-batch-size', values['speculative-disable-by-batch-size']),
  };
  if (Object.values(options).every((v) => v === undefined)) return undefined;
  if (options.method === undefined && options.model === undefined) {
    throw invalidArgument('speculative flags need --speculative-method or --speculative-model DIR');
  }
  return options;
}

/** The EngineConfig field each flag sets, for errors the engine raises in its own field names. */
export const ENGINE_FIELD_OF_FLAG = {
  model: 'model',
  backend: 'backend',
  'load-format': 'loadFormat',
  quantization: 'quantization',
  sparsity: 'sparsity',
  'kv-cache-dtype': 'kvCacheDtype',
  'block-size': 'blockSize',
  'num-kv-blocks': 'numKvBlocks',
  'gpu-memory-utilization': 'gpuMemoryUtilization',
  'cpu-kv-cache-bytes': 'cpuKvCacheBytes',
  'max-model-len': 'maxModelLen',
  'max-num-seqs': 'maxNumSeqs',
  'max-num-batched-tokens': 'maxNumBatchedTokens',
  'no-prefix-caching': 'enablePrefixCaching',
  'num-state-checkpoints': 'numStateCheckpoints',
  'enforce-eager': 'enforceEager',
  'no-async-scheduling': 'asyncScheduling',
  seed: 'seed',
  'no-progress': 'showProgress',
  'speculative-method': 'speculative.method',
  'speculative-model': 'speculative.model',
  'speculative-tree': 'speculative.tree',
  'num-speculative-tokens': 'speculative.numSpeculativeTokens',
  'ngram-min': 'speculative.ngramMin',
  'ngram-max': 'speculative.ngramMax',
  'ngram-branches': 'speculative.ngramBranches',
  'speculative-tree-width': 'speculative.treeWidth',
  'self-spec-layers': 'speculative.selfSpecLayers',
  'speculative-disable-by-batch-size': 'speculative.disableByBatchSize',
  'streaming-sinks': 'streamingSinks',
  'streaming-window': 'streamingWindow',
  'sparse-attention': 'sparseAttention',
  'sparse-token-budget': 'sparseTokenBudget',
  'sparse-sink-tokens': 'sparseSinkTokens',
  'sparse-window-tokens': 'sparseWindowTokens',
  'sparse-dense-layers': 'sparseDenseLayers',
  'enable-lora': 'enableLora',
  'lora-modules': 'loraModules',
  'max-loras': 'maxLoras',
  'max-lora-rank': 'maxLoraRank',
  'preemption-mode': 'preemptionMode',
  'swap-space': 'swapSpace',
  'kv-offload-gb': 'kvOffloadGb',
  'cpu-offload-gb': 'cpuOffloadGb',
  'tensor-parallel-size': 'tensorParallelSize',
  'pipeline-parallel-size': 'pipelineParallelSize',
  'pipeline-micro-batches': 'pipelineMicroBatches',
  'enable-expert-parallel': 'enableExpertParallel',
  'data-parallel-size': 'dataParallelSize',
  'max-replica-restarts': 'maxReplicaRestarts',
} as const satisfies Record<keyof typeof ENGINE_FLAGS, keyof EngineConfig | `speculative.${keyof SpeculativeConfig}`>;

export function numberFlag(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value)) throw invalidArgument(`${name} expects a number (got "${raw}")`);
  return value;
}

export function integerFlag(name: string, raw: string | undefined): number | undefined {
  const value = numberFlag(name, raw);
  if (value !== undefined && !Number.isInteger(value)) throw invalidArgument(`${name} expects an integer (got "${raw}")`);
  return value;
}

export function oneOf<T extends string>(name: string, raw: string | undefined, allowed: readonly T[]): T | undefined {
  if (raw === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(raw)) throw invalidArgument(`${name} must be one of ${allowed.join(', ')} (got "${raw}")`);
  return raw as T;
}
