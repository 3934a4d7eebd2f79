import type { SamplingParams } from '../../sampling/sampling-params.ts';
import type { ChatMessageInput } from '../openai-schemas.ts';
import type { ListedItem } from '../responses/input-items.ts';
import type { PreviousTurn } from './chat-prompt.ts';
import type { ThreadError } from '../thread-errors.ts';
import type { RequestLimits } from './request-limits.ts';
import type { OutputReading } from './tool-use.ts';

/**
 * The messages between the HTTP server and its preprocessing threads, which turn a request's body
 * into what the engine runs: JSON parsing, validation, chat templates and tokenization all happen
 * there, off the server's event loop.
 */

export interface PreprocessSettings {
  /** The model (a directory or a GGUF file) when it has a tokenizer, else null (prompts are then token ids). */
  tokenizerPath: string | null;
  servedModelName: string;
  maxModelLen: number;
  vocabSize: number;
  samplingDefaults: Partial<SamplingParams>;
  limits: RequestLimits;
  /** Special-token strings in chat messages are control tokens (else text). */
  allowSpecialTokens: boolean;
  /** The tool-call parser (--tool-call-parser, or the one the chat template shows), null if none. */
  toolCallParser: string | null;
}

/** A prompt ready for the engine. */
export interface PreparedPrompt {
  tokenIds: number[];
  params: SamplingParams;
  /** The LoRA adapter the request named as its model; null for the base model. */
  lora: string | null;
}

export interface PreparedChat {
  prompt: PreparedPrompt;
  stream: boolean;
  includeUsage: boolean;
  /** How the output is read (tool calls, harmony's channels); null: as plain content. */
  reading: OutputReading | null;
  /** The text the prompt's ids were read from, when the chat continues a conversation (`ChatContinuation`). */
  promptText?: string;
}

/**
 * A chat that is a turn of a stored conversation (the Responses API): the turn before it, whose
 * token ids its prompt starts with where its text does, or null for a first turn. The prepared
 * chat then carries its prompt's text, for the turn after it.
 */
export interface ChatContinuation {
  previous: PreviousTurn | null;
}

export interface PreparedCompletion {
  /** `echoText`: what `echo` puts before each completion ('' without echo). */
  prompts: (PreparedPrompt & { echoText: string })[];
  n: number;
  stream: boolean;
  includeUsage: boolean;
}

export interface TokenizeAnswer {
  tokens: number[];
  count: number;
  max_model_len: number;
}

export interface DetokenizeAnswer {
  prompt: string;
}

/**
 * A /v1/responses body, read and checked: the chat-completions request it amounts to, less the
 * messages, which the server completes with the stored conversation of `previous_response_id`
 * (its store lives on the server's thread) before they go through the chat path.
 */
export interface PreparedResponses {
  /** Chat-completions fields: sampling, tools, response_format, stream. */
  chat: Record<string, unknown>;
  /** The request's input as chat messages. */
  input: ChatMessageInput[];
  /** The request's input items, as GET /v1/responses/{id}/input_items lists them. */
  inputItems: ListedItem[];
  instructions: string | null;
  previousResponseId: string | null;
  store: boolean;
  stream: boolean;
  /** The request fields a response object repeats. */
  echo: Record<string, unknown>;
}

/** What each kind of body becomes. */
export interface Prepared {
  chat: PreparedChat;
  completion: PreparedCompletion;
  responses: PreparedResponses;
  tokenize: TokenizeAnswer;
  detokenize: DetokenizeAnswer;
}

export type PreprocessKind = keyof Prepared;

export interface ToPreprocess {
  id: number;
  kind: PreprocessKind;
  /** The LoRA adapters served now: models a request may name besides the base model. */
  loraAdapters: readonly string[];
  /** The request body's bytes, as they arrived. */
  body: Uint8Array;
  /** A chat body's place in a stored conversation, if it has one. */
  continuation: ChatContinuation | null;
}

export type FromPreprocess =
  | { type: 'ready' }
  | { type: 'load-failed'; error: ThreadError }
  | { type: 'done'; id: number; result: Prepared[PreprocessKind] }
  | { type: 'failed'; id: number; error: ThreadError };
