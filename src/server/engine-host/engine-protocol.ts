import type { LoraAdapterInfo } from '../../engine/llm.ts';
import type { EngineStats } from '../../engine/llm-engine.ts';
import type { RequestMetrics, StreamDelta } from '../../engine/outputs.ts';
import type { SamplingParams } from '../../sampling/sampling-params.ts';
import type { ThreadError } from '../thread-errors.ts';

/**
 * The messages between the HTTP server and the thread that owns the engine. Requests are numbered
 * by the server; the engine answers each with updates (its new tokens and text, never the whole
 * output again) until a finished one, or with a failure.
 *
 * Updates travel in batches, one batch in flight at a time: the server acknowledges each once it
 * has written what it held, and the engine merges what its steps make meanwhile into the next. So
 * the server's event loop gets one message per turn however fast the engine streams, and each
 * response one write per turn with every token it gained since the last (update-outbox.ts).
 */

/** What the server needs to know about the loaded engine; it does not change while serving. */
export interface EngineInfo {
  /** The model's name: the repo id as given, or its directory's name. */
  model: string;
  /** Where its files are: a directory, or a GGUF file. */
  modelPath: string;
  backend: string;
  maxModelLen: number;
  vocabSize: number;
  blockSize: number;
  numKvBlocks: number;
  /** Most sequences in one step (a replica's batch: the router's unit of load). */
  maxNumSeqs: number;
  /** Adapters held on the device at once (`--max-loras`). */
  maxLoras: number;
  /** Sampling defaults from the model's generation_config.json. */
  samplingDefaults: Partial<SamplingParams>;
  hasTokenizer: boolean;
  /** The chat template's source, null when the model has none. */
  chatTemplate: string | null;
  /** The LoRA adapters served at start; null when LoRA is not enabled (none can be loaded). */
  loraAdapters: LoraAdapterInfo[] | null;
}

export type ToEngine =
  | { type: 'add'; id: number; tokenIds: number[]; params: SamplingParams; lora: string | null }
  | { type: 'abort'; id: number }
  /** The server has handled the last batch of updates: the engine may send the next. */
  | { type: 'ack' }
  /** Load or unload a LoRA adapter; answered by 'lora-done' with the same id. */
  | { type: 'load-lora'; id: number; name: string; path: string }
  | { type: 'unload-lora'; id: number; name: string }
  /** Start recording the step timeline into a file (recording), or stop (null); answered by 'step-timeline-done' with the same id. */
  | { type: 'step-timeline'; id: number; recording: StepTimelineRecording | null }
  /** Abort everything and stop; answered by 'closed'. */
  | { type: 'close' };

export type FromEngine =
  | { type: 'ready'; info: EngineInfo }
  /** The engine could not be loaded (the thread then ends). */
  | { type: 'load-failed'; error: ThreadError }
  /** Every request's updates since the previous batch, and the stats as they stand after them; answered by 'ack'. */
  | { type: 'updates'; updates: RequestUpdate[]; stats: EngineStats }
  | { type: 'failed'; id: number; error: ThreadError }
  /** A load-lora or unload-lora done (error null) or refused; the adapters served after it. */
  | { type: 'lora-done'; id: number; error: ThreadError | null; adapters: LoraAdapterInfo[] }
  /** A step-timeline start or stop done (error null) or refused. */
  | { type: 'step-timeline-done'; id: number; error: ThreadError | null }
  /** Sent every STATS_INTERVAL_MS while serving and no updates are held (batches of updates carry them then). */
  | { type: 'stats'; stats: EngineStats }
  /** The engine has stopped; `error` is why freeing it failed, if it did. */
  | { type: 'closed'; error: ThreadError | null };

/** Where an engine records its step timeline (`keel serve --step-timeline`). */
export interface StepTimelineRecording {
  path: string;
  /** Added to every line: the replica's index, with several replicas. */
  fields: Record<string, number>;
  /** Append to the file (a restarted replica's engine) rather than create it afresh. */
  append: boolean;
}

/** What one request gained: per completion, its new tokens and text. `finished` carries its timings on its last update, null before. */
export interface RequestUpdate {
  id: number;
  deltas: StreamDelta[];
  finished: RequestMetrics | null;
}

export const STATS_INTERVAL_MS = 50;
