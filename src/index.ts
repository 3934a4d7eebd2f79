/** Keel's library API. */
export { LLM, type LoraAdapterInfo, type Prompt, type RequestOptions, type StreamUpdate } from './engine/llm.ts';
export { DEFAULT_MODEL_DIR } from './engine/load-engine.ts';
export type { EngineStats } from './engine/llm-engine.ts';
export type { CompletionOutput, FinishReason, PositionLogprobs, RequestOutput, StreamDelta } from './engine/outputs.ts';
export { DEFAULT_ENGINE_CONFIG, type EngineConfig, type LoraModule } from './config.ts';
export { DEFAULT_SAMPLING_PARAMS, type SamplingParams } from './sampling/sampling-params.ts';
export type { ChatMessage } from './tokenizer/tokenizer.ts';
export { KeelError, type KeelErrorKind } from './errors.ts';
