import { z } from 'zod';
import { STEP_KINDS } from '../engine/step-timeline.ts';
import { LINEAR_BENCH_FORMATS, LINEAR_BENCH_PATHS } from './linear-bench-options.ts';

/**
 * The one JSON shape every benchmark result has, Keel's commands and the peers' scripts alike
 * (tools/peers/*.py write it too): who ran what, where, when, with which settings, and every
 * figure. Timing keys follow `vllm bench serve` (mean_ttft_ms, p99_itl_ms...).
 */
export const RESULT_SCHEMA_VERSION = 1;

const count = z.number().int().nonnegative();
const figure = z.number().nonnegative();
const optionalFigure = figure.nullable();

/** mean_/median_/p90_/p99_ + metric, each null when nothing was measured. */
function summaryFields<M extends string>(metric: M) {
  return {
    [`mean_${metric}`]: optionalFigure,
    [`median_${metric}`]: optionalFigure,
    [`p90_${metric}`]: optionalFigure,
    [`p99_${metric}`]: optionalFigure,
  } as Record<`${'mean' | 'median' | 'p90' | 'p99'}_${M}`, typeof optionalFigure>;
}

const DeviceSchema = z.strictObject({
  /** Keel's backend (cpu, cuda), a peer's device kind, or null when unknown (an external server). */
  backend: z.string().nullable(),
  /** GPU name, or CPU model for the CPU backend; null when unknown. */
  name: z.string().nullable(),
  /** NVIDIA kernel driver version, when the host has one. */
  driver: z.string().nullable(),
  cuda_version: z.string().nullable(),
  /** The host running the benchmark. */
  cpu: z.string(),
  cpu_count: count,
});

const ModelSchema = z.strictObject({
  /** Directory name: keel-tiny, llama-3.1-8b... */
  name: z.string(),
  path: z.string(),
  model_type: z.string(),
  parameter_count: count,
  /** auto: the checkpoint's weights; dummy: random weights from config.json. */
  load_format: z.string(),
  dtype: z.string(),
});

const RooflineSchema = z.strictObject({
  weight_bytes_per_step: figure,
  kv_bytes_per_step: figure,
  bytes_per_step: figure,
  achieved_bytes_per_s: figure,
  bandwidth_bytes_per_s: optionalFigure,
  fraction: optionalFigure,
});

/** With weight offload (--cpu-offload-gb): a decode step's copies of the offloaded layers against the host-to-device bandwidth. */
const OffloadBoundSchema = z.strictObject({
  host_bytes_per_step: figure,
  host_to_device_bytes_per_s: optionalFigure,
  bound_step_s: optionalFigure,
  fraction: optionalFigure,
});

/** Speculative decoding over the measured runs (Keel with --speculative-*; null when it does not speculate). */
const SpeculationSchema = z.strictObject({
  /** Verifications: sequence steps that ran drafts. */
  drafts: count,
  draft_tokens: count,
  accepted_tokens: count,
  acceptance_rate: optionalFigure,
  /** Tokens a verification gives on average: its accepted drafts and the token after them. */
  mean_accepted_length: optionalFigure,
  /** [i]: of the verifications with a draft i (0-based), the fraction that accepted it. */
  acceptance_rate_by_position: z.array(figure),
});

/** A step kind's share of a step timeline: steps of only prompt tokens, only decode rows, both, any verification, or none (a call that only read a step left running). */
const StepKindSchema = z.strictObject({
  kind: z.enum(STEP_KINDS),
  steps: count,
  prefill_tokens: count,
  decode_rows: count,
  verify_tokens: count,
  mean_batch_size: figure,
  /** Σ the steps' device time (prepare, forward, sampling), and its forward and sampling parts. */
  device_ms: figure,
  forward_ms: figure,
  sampling_ms: figure,
  /** device_ms over the tokens the steps ran (prefill tokens + decode rows + verify tokens): per prompt token in prefill steps, per row in decode steps; null with none. */
  device_ms_per_token: optionalFigure,
  /** Σ the steps' host time outside waits for the device. */
  host_work_ms: figure,
});

/** Host milliseconds per phase of the step timeline (src/engine/step-timeline.ts HOST_PHASES). */
const HostPhasesSchema = z.strictObject({
  schedule: figure,
  batch: figure,
  draws: figure,
  forward: figure,
  sample: figure,
  wait: figure,
  output: figure,
  between: figure,
});

/**
 * With --step-timeline: the steps of the measured run(s), summed (summarizeStepTimeline; one line
 * per step in the JSONL file). Device times come from marks on the backend's queue (CUDA events).
 */
const StepTimelineSchema = z.strictObject({
  /** The JSONL file of the steps. */
  file: z.string(),
  /** Engine step() calls, and those that launched a step on the device. */
  steps: count,
  launched_steps: count,
  /** From the first call's start to the last one's end, on the host clock. */
  wall_ms: figure,
  /** Σ the launched steps' device time, and its fraction of wall_ms (null over no time). */
  device_busy_ms: figure,
  device_busy_fraction: optionalFigure,
  /** Σ the device's gaps between consecutive launched steps (idle, unless copies ran between steps), their median and largest. */
  device_idle_ms: figure,
  median_gap_ms: optionalFigure,
  max_gap_ms: optionalFigure,
  /** Σ device time before the target's forward (block copies, drafting), in the forward (with the batch's upload), in the sampling pass. */
  prepare_ms: figure,
  forward_ms: figure,
  sampling_ms: figure,
  /** Of device_busy_ms (null when 0). */
  forward_fraction: optionalFigure,
  sampling_fraction: optionalFigure,
  by_kind: z.array(StepKindSchema),
  host_ms: HostPhasesSchema,
  /** Σ host time outside waits for the device: every phase but wait. */
  host_work_ms: figure,
  /**
   * Σ over steps of max(0, the call's host work − its step's device time): what the host adds to
   * the wall time even if each call's host work overlapped its step's device time in full (async
   * scheduling's aim); compare with device_idle_ms, the idle time measured.
   */
  host_critical_ms: figure,
  /** Steps whose call's host work exceeded their device time. */
  host_bound_steps: count,
});

const LatencyBatchSchema = z.strictObject({
  batch_size: count,
  input_len: count,
  output_len: count,
  num_iters: count,
  ...summaryFields('ttft_ms'),
  ...summaryFields('tpot_ms'),
  ...summaryFields('e2el_ms'),
  /** batch × output tokens / mean end-to-end latency. */
  output_tokens_per_s: figure,
  /** batch / mean TPOT: tokens per second while decoding. */
  decode_tokens_per_s: optionalFigure,
  roofline: RooflineSchema.nullable(),
  /** Keel with --cpu-offload-gb; absent or null without weight offload. */
  offload: OffloadBoundSchema.nullable().optional(),
  /** Preemptions during the measured iterations (KV pool too small for the batch). */
  preemptions: count.nullable(),
  /** Of those, the preemptions that swapped the sequence's K/V to host memory (the others recomputed it); absent in results before 2026-12-05. */
  swaps: count.nullable().optional(),
  speculation: SpeculationSchema.nullable().optional(),
  /** With --baseline: the baseline run's mean TPOT at this batch size over this run's (a decode step's speedup), null without that batch size there. */
  speedup_vs_baseline: optionalFigure.optional(),
  /** With --step-timeline: the measured iterations' steps. */
  step_timeline: StepTimelineSchema.optional(),
});

const LatencyResultsSchema = z.strictObject({
  bandwidth_bytes_per_s: optionalFigure,
  bandwidth_source: z.string().nullable(),
  batches: z.array(LatencyBatchSchema),
});

const ThroughputRooflineSchema = z.strictObject({
  flops: figure,
  weight_bytes_lower_bound: figure,
  // Absent from results written before the bound counted the cache's reads (their bound_s is weights or FLOPs alone).
  kv_bytes_lower_bound: figure.optional(),
  peak_flops_per_s: figure.nullable(),
  bandwidth_bytes_per_s: figure.nullable(),
  bound_s: figure.nullable(),
  fraction: figure.nullable(),
});

const ThroughputResultsSchema = z.strictObject({
  workload: z.string(),
  num_requests: count,
  elapsed_s: figure,
  total_input_tokens: count,
  total_output_tokens: count,
  requests_per_s: figure,
  input_tokens_per_s: figure,
  output_tokens_per_s: figure,
  total_tokens_per_s: figure,
  /** Keel's runs: the device bound of the workload (peers leave it out). */
  roofline: ThroughputRooflineSchema.optional(),
  speculation: SpeculationSchema.nullable().optional(),
  /** With --step-timeline: this run's steps. */
  step_timeline: StepTimelineSchema.optional(),
  /**
   * With --num-iters N > 1 the figures above are the median run's (by output tokens/s), and this
   * is every measured run's output tokens/s, in order, with their spread: (max - min) / median.
   */
  repeats: z
    .strictObject({
      output_tokens_per_s: z.array(figure),
      median_output_tokens_per_s: figure,
      min_output_tokens_per_s: figure,
      max_output_tokens_per_s: figure,
      relative_spread: figure,
    })
    .optional(),
});

/** `bench serve --dataset multi-turn`: turns re-send their conversation's history. */
const MultiTurnSchema = z.strictObject({
  num_conversations: count,
  num_turns: count,
  ...summaryFields('first_turn_ttft_ms'),
  ...summaryFields('later_turns_ttft_ms'),
  /** Mean TTFT of each turn's completed requests (turn 1 first); null where none completed. */
  mean_ttft_ms_by_turn: z.array(optionalFigure),
  /** Results before 2026-12-05 only: now server_metrics.prefix_cache_hit_rate, for every dataset. */
  prefix_cache_hit_rate: z.strictObject({ device: figure, host: figure }).nullable().optional(),
});

/**
 * A Keel server's own counters over a serve run (its /metrics read after the warm-up and once the
 * run's requests have finished): the figures vLLM's /metrics gives beside `vllm bench serve`.
 * Counters are server-wide: another client's requests during the run count too.
 */
const ServerMetricsSchema = z.strictObject({
  /** Prompt tokens the server admitted (a preempted sequence's recomputed prompt counts again). */
  prompt_tokens: count,
  /** Of prompt_tokens, the fraction served from the prefix cache, by tier: the device pool, the host tier (--kv-offload-gb). */
  prefix_cache_hit_rate: z.strictObject({ device: figure, host: figure }),
  /** Sequences preempted for lack of KV blocks, and of those the ones swapped out to host memory (the others recomputed). */
  preemptions: count,
  swaps: count,
  /** Null when the server does not speculate; acceptance_rate_by_position is empty from a server that exports no drafts by position. */
  speculation: SpeculationSchema.nullable(),
});

const ServeResultsSchema = z.strictObject({
  duration_s: figure,
  completed: count,
  failed: count,
  total_input_tokens: count,
  total_output_tokens: count,
  request_throughput: figure,
  output_throughput: figure,
  total_token_throughput: figure,
  /** How token times were observed: streamed text chunks (vLLM's way) or per-token logprobs chunks. */
  token_timing: z.enum(['text-chunks', 'logprobs']),
  ...summaryFields('ttft_ms'),
  ...summaryFields('tpot_ms'),
  ...summaryFields('itl_ms'),
  ...summaryFields('e2el_ms'),
  /** The first few failures' messages. */
  errors: z.array(z.string()),
  /** Null against a server without Keel's /metrics; absent in results before 2026-12-05. */
  server_metrics: ServerMetricsSchema.nullable().optional(),
  multi_turn: MultiTurnSchema.optional(),
});

const AttentionResultsSchema = z.strictObject({
  /** Prefill (causal attention over a whole prompt). */
  shapes: z.array(
    z.strictObject({
      /** Which prefill kernel (results before the Hopper kernel have one, unnamed: legacy). */
      kernel: z.enum(['legacy', 'wgmma']).optional(),
      /** The torch SDPA peer's backend (results before 2026-12-07 timed FLASH_ATTENTION alone and leave it out). */
      backend: z.enum(['FLASH_ATTENTION', 'CUDNN_ATTENTION']).optional(),
      batch: count,
      seq_len: count,
      num_heads: count,
      num_kv_heads: count,
      head_dim: count,
      /** The value head where it is narrower than head_dim (the SDPA peer on MLA's expanded shapes); absent: head_dim. */
      value_dim: count.optional(),
      causal: z.boolean(),
      ms: figure,
      tflops: figure,
    }),
  ),
  /** Decode (one query token per sequence over its cached context): Keel's kernels only. */
  decode: z
    .array(
      z.strictObject({
        /** The cache's dtype (KvCacheLayout.dtype); absent in results before 2026-12-06, whose caches were bf16. */
        kv_dtype: z.enum(['auto', 'fp8_e4m3', 'int8', 'int4']).optional(),
        /** The decode kernel asked for; absent in results before both were timed (bf16 ran on CUDA cores, quantized caches on tensor cores where they could). */
        kernel: z.enum(['auto', 'tensor-cores', 'cuda-cores']).optional(),
        batch: count,
        context_len: count,
        num_heads: count,
        num_kv_heads: count,
        head_dim: count,
        us: figure,
        gb_per_s: figure,
      }),
    )
    .optional(),
  /** MLA decode (absorbed, over the latent cache): cached rows read per second, per decode kernel. */
  mla_decode: z
    .array(
      z.strictObject({
        /** Which decode kernel (results before both were timed have none: the tiled one). */
        kernel: z.enum(['flash', 'tiled']).optional(),
        batch: count,
        context_len: count,
        num_heads: count,
        latent_dim: count,
        rope_dim: count,
        us: figure,
        gb_per_s: figure,
        read_fraction: figure,
      }),
    )
    .optional(),
  /**
   * MLA prefill (causal): each form's time and TFLOP/s (attention-benchmark.ts's MlaPrefillFigure).
   * Without `form` (results before 2026-12-07): the absorbed kernel alone.
   */
  mla_prefill: z
    .array(
      z.strictObject({ form: z.enum(['absorbed', 'expanded']).optional(), seq_len: count, num_heads: count, latent_dim: count, rope_dim: count, ms: figure, tflops: figure }),
    )
    .optional(),
  /** The device measured alike: read and copy bandwidth, a large bf16 GEMM. */
  ceilings: z.strictObject({ read_gb_per_s: figure, copy_gb_per_s: figure, gemm_bf16_8192_tflops: figure }).optional(),
});

/** `keel bench linear`: each format's linear kernels (and MXFP4 expert MLPs) against bf16 cuBLAS. */
const LinearResultsSchema = z.strictObject({
  figures: z.array(
    z.strictObject({
      op: z.enum(['linear', 'expert-mlp']),
      n: count,
      k: count,
      rows: count,
      format: z.enum(LINEAR_BENCH_FORMATS),
      path: z.enum(LINEAR_BENCH_PATHS),
      us: figure,
      weight_bytes: count,
      gb_per_s: figure,
      tflops: figure,
      speedup_vs_bf16: figure,
    }),
  ),
  /** The device's read bandwidth, measured alike: the roofline of the GB/s figures. */
  read_gb_per_s: figure,
});

/** `keel bench lora`: addLora on one layer of Llama-3.1-8B's adapted linears, beside their matmuls. */
const LoraResultsSchema = z.strictObject({
  figures: z.array(
    z.strictObject({
      step: z.enum(['decode', 'prefill']),
      tokens: count,
      adapters: count,
      rank: count,
      lora_us: figure,
      base_us: figure,
      overhead: figure,
      adapter_gb_per_s: figure,
    }),
  ),
});

/**
 * `keel bench verify`: one target pass of speculative verification (each sequence its last sampled
 * token and q - 1 drafts, logits at all q positions) beside a plain decode step, at each batch size,
 * after the same cached context. A step's time is beginStep and the forward, the device synchronized.
 */
const VerifyResultsSchema = z.strictObject({
  decode: z.array(
    z.strictObject({
      batch_size: count,
      mean_step_ms: figure,
      median_step_ms: figure,
      /** mean_step_ms over the step's batch_size tokens. */
      ms_per_token: figure,
      /** Replayed as a CUDA graph, as the engine runs a decode step of this batch. */
      cuda_graph: z.boolean(),
    }),
  ),
  verify: z.array(
    z.strictObject({
      batch_size: count,
      query_tokens: count,
      mean_step_ms: figure,
      median_step_ms: figure,
      /** mean_step_ms over the step's batch_size × query_tokens tokens. */
      ms_per_query_token: figure,
      /** mean_step_ms over the plain decode step's at this batch size. */
      ratio_to_decode: figure,
      /** The engine runs verification steps eagerly: false unless that changes. */
      cuda_graph: z.boolean(),
    }),
  ),
});

const LlamaBenchResultsSchema = z.strictObject({
  tests: z.array(z.strictObject({ name: z.string(), tokens_per_s: figure, stddev: optionalFigure })),
});

/**
 * Keel beside llama.cpp on one GGUF file (tools/peers/gguf_parity.py): each prompt's greedy
 * continuation by Keel judged step by step in llama.cpp's logits for the same context, and both
 * engines' batch-1 decode rate.
 */
const GgufParityResultsSchema = z.strictObject({
  /** As llama-quantize named it: F16, Q8_0, Q4_K_M. */
  gguf_type: z.string(),
  gguf_bytes: count.nullable(),
  /** The largest logit (llama.cpp) and logprob (Keel) gap a differing step may have. */
  near_tie_tolerance: figure,
  prompts: z.array(
    z.strictObject({
      prompt_len: count,
      generated: count,
      /** Leading tokens the two free-running greedy continuations share. */
      identical_greedy_prefix: count,
      steps_agreeing: count,
      disagreements: z.array(
        z.strictObject({
          step: count,
          keel_token: count,
          llama_cpp_token: count,
          llama_cpp_gap: figure,
          keel_gap: z.number(),
          keel_lists_llama_cpp_token: z.boolean(),
          near_tie: z.boolean(),
        }),
      ),
      llama_cpp_min_top2_gap: optionalFigure,
      /** |(Keel's logprob(token) − logprob(x)) − (llama.cpp's logit(token) − logit(x))| over Keel's top candidates x at every step. */
      max_relative_logit_error: optionalFigure,
      mean_relative_logit_error: optionalFigure,
      passed: z.boolean(),
    }),
  ),
  passed: z.boolean(),
  max_relative_logit_error: optionalFigure,
  keel_load_seconds: optionalFigure,
  keel_decode_tokens_per_s: optionalFigure,
  llama_cpp_decode_tokens_per_s: optionalFigure,
});

/** llama.cpp's llama-batched-bench: each sequence prefills its prompt, then all decode together (tools/peers/bench_result.py). */
const LlamaBatchedBenchResultsSchema = z.strictObject({
  runs: z.array(
    z.strictObject({
      prompt_tokens: count,
      generated_tokens: count,
      sequences: count,
      kv_tokens: count,
      prefill_s: figure,
      prefill_tokens_per_s: figure,
      decode_s: figure,
      /** sequences x generated_tokens over decode_s. */
      decode_tokens_per_s: figure,
      /** decode_s over generated_tokens: one step of every sequence (Keel's TPOT). */
      decode_ms_per_step: figure,
      total_s: figure,
      tokens_per_s: figure,
    }),
  ),
});

/** `keel quantize --result`: one checkpoint quantized, how long it took and how close its layers came (LayerReport summed). */
const QuantizeResultsSchema = z.strictObject({
  seconds: figure,
  layers: count,
  /** Σ over the layers of their output error on the sampled calibration inputs, and round to nearest's on the same grid. */
  summed_error: figure,
  summed_rtn_error: figure,
});

const base = {
  schema_version: z.literal(RESULT_SCHEMA_VERSION),
  /** keel, or the peer: hf-eager, hf-static-compile, hf-generate-batch, torch-sdpa, llama.cpp. */
  engine: z.string(),
  status: z.enum(['ok', 'failed']),
  /** Why a failed run failed. */
  error: z.string().nullable(),
  /** When the run started (ISO 8601). */
  date: z.iso.datetime({ offset: true }),
  git_commit: z.string().nullable(),
  /** Tracked files differed from the commit. */
  git_dirty: z.boolean().nullable(),
  /** Versions: node, or python/torch/transformers for the peers. */
  software: z.record(z.string(), z.string()),
  device: DeviceSchema,
  model: ModelSchema.nullable(),
  /** Every setting of the run: flags, engine configuration, workload. */
  config: z.record(z.string(), z.unknown()),
};

const suite = <S extends string, R extends z.ZodType>(name: S, results: R) =>
  z.strictObject({ ...base, suite: z.literal(name), results: results.nullable() });

export const BenchResultSchema = z
  .discriminatedUnion('suite', [
    suite('latency', LatencyResultsSchema),
    suite('throughput', ThroughputResultsSchema),
    suite('serve', ServeResultsSchema),
    suite('attention', AttentionResultsSchema),
    suite('linear', LinearResultsSchema),
    suite('lora', LoraResultsSchema),
    suite('verify', VerifyResultsSchema),
    suite('llama-bench', LlamaBenchResultsSchema),
    suite('llama-batched-bench', LlamaBatchedBenchResultsSchema),
    suite('gguf-parity', GgufParityResultsSchema),
    suite('quantize', QuantizeResultsSchema),
  ])
  .refine((r) => (r.status === 'ok') === (r.results !== null) && (r.status === 'failed') === (r.error !== null), {
    message: 'an ok result has results and no error; a failed one has an error and no results',
  });

export type BenchResult = z.infer<typeof BenchResultSchema>;
export type Device = z.infer<typeof DeviceSchema>;
export type ModelInfo = z.infer<typeof ModelSchema>;
export type LatencyBatch = z.infer<typeof LatencyBatchSchema>;
export type ThroughputResults = z.infer<typeof ThroughputResultsSchema>;
export type SpeculationFigures = z.infer<typeof SpeculationSchema>;
export type StepTimelineSummary = z.infer<typeof StepTimelineSchema>;
export type StepKindFigures = z.infer<typeof StepKindSchema>;
export type ServeResults = z.infer<typeof ServeResultsSchema>;
export type MultiTurnResults = z.infer<typeof MultiTurnSchema>;
export type ServerMetricsResults = z.infer<typeof ServerMetricsSchema>;
export type VerifyResults = z.infer<typeof VerifyResultsSchema>;
