import { constants } from 'node:os';
import type { parseArgs } from 'node:util';
import { invalidArgument } from '../errors.ts';
import type { EngineReplicas } from '../server/engine-host/engine-replicas.ts';
import { LOG_LEVELS } from '../server/json-logger.ts';
import { DEFAULT_SERVER_OPTIONS, PROMPT_BYTES_PER_TOKEN, type RunningServer, type ServerOptions, type ShutdownReport } from '../server/server.ts';
import { startServing } from '../server/start-serving.ts';
import { ENGINE_FLAGS, ENGINE_FLAGS_HELP, engineConfigFromFlags, integerFlag, numberFlag, oneOf } from './engine-flags.ts';
import { TOOL_CALL_PARSERS } from '../server/tool-calls/tool-call-formats.ts';
import { parseFlags } from './parse-flags.ts';

const D = DEFAULT_SERVER_OPTIONS;
const seconds = (ms: number) => ms / 1000;

export const SERVE_HELP = `Usage: keel serve [options]

Serves the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions,
/v1/responses, /v1/models, /tokenize, /detokenize, /health, /metrics; with LoRA, /v1/load_lora_adapter
and /v1/unload_lora_adapter) with a web playground at /. The engine runs
on a thread of its own, request bodies are read on --preprocess-threads more: a long step or a
huge prompt never holds up the other clients. With --data-parallel-size N, N engines each run in
a process of their own and each request goes to one by prefix affinity and load; one that dies
fails only its own requests (503) while the others serve on (docs/parallelism.md).
/metrics also carries vLLM's names that Kubernetes' Gateway API Inference Extension reads.
SIGTERM, SIGINT (Ctrl-C) or SIGHUP stops accepting connections, lets requests in flight finish
for up to --shutdown-timeout, then cuts the rest and exits 1 (0 when nothing was cut); a second
signal exits at once.

  --host HOST                    address to bind (default ${D.host}; 0.0.0.0 for every interface)
  --port N                       port (default ${D.port}; 0 picks a free one)
  --api-key KEY                  require "Authorization: Bearer KEY" on the API (default: env KEEL_API_KEY)
  --served-model-name NAME       the model name clients use (default: the repo id as given, or the
                                 model directory's name)
  --allowed-hosts H[,H...]       Host header names to answer, * for any (default: localhost, 127.0.0.1
                                 and ::1 when bound to loopback, else any)
  --allow-special-tokens         special-token strings in chat messages are control tokens (default: text)

Applications (docs/tool-calling.md, docs/responses-api.md):
  --tool-call-parser NAME        how the model writes tool calls: ${TOOL_CALL_PARSERS.join('|')}
                                 (default: the one its chat template shows; without one, requests
                                 with tools must send tool_choice "none")
  --responses-store-size N       responses kept for GET /v1/responses/{id} and previous_response_id,
                                 least recently used dropped first (default ${D.responsesStoreSize})
  --enable-force-include-usage   streams end with usage even when the client did not ask for it

Limits (a request over one alone is a 413; one that does not fit beside those waiting, a 429):
  --max-n N                      largest n a request may ask for (default ${D.maxN})
  --max-prompts-per-request N    most prompts in one /v1/completions batch (default ${D.maxPromptsPerRequest})
  --max-prompt-bytes N           largest prompt in UTF-8 bytes, checked before tokenizing
                                 (default ${PROMPT_BYTES_PER_TOKEN} per token of the max model length)
  --max-queued-sequences N       most sequences (prompts × n) waiting for the engine (default ${D.maxQueuedSequences}; 0 = no limit)
  --max-queued-tokens N          most prompt tokens waiting for the engine (default ${D.maxQueuedTokens}; 0 = no limit)
  --max-body-bytes N             largest request body (default ${D.maxBodyBytes})

Connections:
  --header-timeout S             seconds for a request's headers to arrive (default ${seconds(D.headerTimeoutMs)})
  --body-timeout S               seconds for a whole request, headers and body, to arrive (default ${seconds(D.bodyTimeoutMs)})
  --idle-timeout S               close a keep-alive connection idle this long, and a response whose client
                                 has read nothing for this long (default ${seconds(D.idleTimeoutMs)})
  --max-connections N            close connections beyond this many as they arrive (default ${D.maxConnections})
  --shutdown-timeout S           seconds to let requests finish on shutdown (default ${seconds(D.shutdownTimeoutMs)})

  --preprocess-threads N         threads that parse, validate and tokenize requests (default ${D.preprocessThreads})
  --log-level LEVEL              ${LOG_LEVELS.join('|')} (default ${D.logLevel}); JSON lines on stderr
  --step-timeline FILE           record every engine step while serving: a JSON line per step in
                                 FILE (its tokens, the host's phases, the device time of its forward
                                 and sampling pass), written every second and in full on shutdown;
                                 with --data-parallel-size N one file per replica, FILE with
                                 .replicaR before its extension; POST /stop_profile and
                                 /start_profile pause and resume it (docs/benchmarks.md)

${ENGINE_FLAGS_HELP}`;

export const SERVE_FLAGS = {
  ...ENGINE_FLAGS,
  host: { type: 'string' },
  port: { type: 'string' },
  'api-key': { type: 'string' },
  'served-model-name': { type: 'string' },
  'allowed-hosts': { type: 'string' },
  'allow-special-tokens': { type: 'boolean' },
  'tool-call-parser': { type: 'string' },
  'responses-store-size': { type: 'string' },
  'enable-force-include-usage': { type: 'boolean' },
  'max-n': { type: 'string' },
  'max-prompts-per-request': { type: 'string' },
  'max-prompt-bytes': { type: 'string' },
  'max-queued-sequences': { type: 'string' },
  'max-queued-tokens': { type: 'string' },
  'max-body-bytes': { type: 'string' },
  'header-timeout': { type: 'string' },
  'body-timeout': { type: 'string' },
  'idle-timeout': { type: 'string' },
  'max-connections': { type: 'string' },
  'shutdown-timeout': { type: 'string' },
  'preprocess-threads': { type: 'string' },
  'log-level': { type: 'string' },
  'step-timeline': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Signals that start a graceful shutdown; a second one exits at once. SIGHUP comes when the terminal goes. */
const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
/** If a shutdown has not ended this long after its drain timeout, the process exits regardless. */
const SHUTDOWN_WATCHDOG_MS = 15_000;

/** `engineEntry`: the engine thread's module, for stand-ins of the engine (the chaos soak's synthetic one). */
export async function serveCommand(argv: string[], engineEntry?: URL): Promise<number> {
  const { values } = parseFlags('keel serve', { args: argv, options: SERVE_FLAGS });
  if (values.help) {
    console.log(SERVE_HELP);
    return 0;
  }
  const serverOptions = serverOptionsFromFlags(values);
  const { engine, server } = await startServing(engineConfigFromFlags(values), serverOptions, engineEntry);
  const replicas = engine.size > 1 ? ` on ${engine.size} replicas` : '';
  console.log(`Keel is serving ${engine.info.model}${replicas} at ${server.url} (playground: ${server.url}/, API: ${server.url}/v1)`);
  const { report, engineFailure } = await untilShutdown(server, engine, serverOptions.shutdownTimeoutMs);
  const closeError = await engine.close();
  if (closeError) console.error(`keel: ${closeError.message}`);
  if (engineFailure) {
    console.error(`keel: the engine stopped (${engineFailure.message}); the server has shut down`);
    return 1;
  }
  if (report.cut > 0) {
    console.error(`keel: the shutdown timeout cut ${report.cut} request${report.cut === 1 ? '' : 's'} still in flight`);
    return 1;
  }
  return 0;
}

/** Serves until a stop signal or the engine's death, then shuts the server down. */
function untilShutdown(server: RunningServer, engine: EngineReplicas, shutdownTimeoutMs: number): Promise<{ report: ShutdownReport; engineFailure: Error | null }> {
  return new Promise((resolve, reject) => {
    let stopping = false;
    const stop = (engineFailure: Error | null, timeoutMs: number) => {
      stopping = true;
      setTimeout(() => {
        console.error('keel: the shutdown did not end in time; exiting');
        process.exit(1);
      }, timeoutMs + SHUTDOWN_WATCHDOG_MS).unref();
      server.close({ timeoutMs }).then((report) => resolve({ report, engineFailure }), reject);
    };
    const onSignal = (signal: (typeof STOP_SIGNALS)[number]) => {
      if (stopping) {
        console.error(`keel: ${signal} again: exiting at once`);
        process.exit(128 + constants.signals[signal]);
      }
      console.error(`keel: ${signal}: finishing requests in flight for up to ${seconds(shutdownTimeoutMs)} s (signal again to exit at once)`);
      stop(null, shutdownTimeoutMs);
    };
    for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
    // Nothing can be served any more (no replica is left): in-flight requests have failed with a 503 already.
    engine.stopped.then((failure) => {
      if (!stopping) stop(failure, 0);
    });
  });
}

type ServeFlagValues = ReturnType<typeof parseArgs<{ options: typeof SERVE_FLAGS; strict: true }>>['values'];

function serverOptionsFromFlags(values: ServeFlagValues): Omit<ServerOptions, 'engine' | 'logStream'> {
  const port = integerFlag('--port', values.port) ?? D.port;
  if (port < 0 || port > 65535) throw invalidArgument(`--port must be in [0, 65535] (got ${port})`);
  const apiKey = values['api-key'] ?? process.env.KEEL_API_KEY ?? null;
  if (apiKey === '') throw invalidArgument('the API key is empty: give --api-key KEY or unset KEEL_API_KEY');
  const headerTimeoutMs = secondsFlag('--header-timeout', values['header-timeout'], D.headerTimeoutMs);
  const bodyTimeoutMs = secondsFlag('--body-timeout', values['body-timeout'], D.bodyTimeoutMs);
  if (headerTimeoutMs > bodyTimeoutMs) throw invalidArgument('--header-timeout must not be longer than --body-timeout, which counts the headers too');
  const allowedHosts = values['allowed-hosts']?.split(',').map((h) => h.trim()).filter((h) => h !== '') ?? null;
  if (allowedHosts !== null && allowedHosts.length === 0) throw invalidArgument('--allowed-hosts is empty: list host names, or * for any');
  const stepTimeline = values['step-timeline'] ?? null;
  if (stepTimeline === '') throw invalidArgument('--step-timeline needs a file name');
  const shutdownTimeout = numberFlag('--shutdown-timeout', values['shutdown-timeout']);
  if (shutdownTimeout !== undefined && shutdownTimeout < 0) throw invalidArgument(`--shutdown-timeout must not be negative (got ${shutdownTimeout})`);
  return {
    host: values.host ?? D.host,
    port,
    apiKey,
    servedModelName: values['served-model-name'] ?? null,
    allowedHosts,
    allowSpecialTokens: values['allow-special-tokens'] === true,
    maxN: positive('--max-n', values['max-n']) ?? D.maxN,
    maxPromptsPerRequest: positive('--max-prompts-per-request', values['max-prompts-per-request']) ?? D.maxPromptsPerRequest,
    maxPromptBytes: positive('--max-prompt-bytes', values['max-prompt-bytes']) ?? D.maxPromptBytes,
    maxQueuedSequences: limitOrNone('--max-queued-sequences', values['max-queued-sequences'], D.maxQueuedSequences),
    maxQueuedTokens: limitOrNone('--max-queued-tokens', values['max-queued-tokens'], D.maxQueuedTokens),
    maxBodyBytes: positive('--max-body-bytes', values['max-body-bytes']) ?? D.maxBodyBytes,
    headerTimeoutMs,
    bodyTimeoutMs,
    idleTimeoutMs: secondsFlag('--idle-timeout', values['idle-timeout'], D.idleTimeoutMs),
    maxConnections: positive('--max-connections', values['max-connections']) ?? D.maxConnections,
    shutdownTimeoutMs: shutdownTimeout === undefined ? D.shutdownTimeoutMs : shutdownTimeout * 1000,
    preprocessThreads: positive('--preprocess-threads', values['preprocess-threads']) ?? D.preprocessThreads,
    toolCallParser: oneOf('--tool-call-parser', values['tool-call-parser'], TOOL_CALL_PARSERS) ?? D.toolCallParser,
    responsesStoreSize: positive('--responses-store-size', values['responses-store-size']) ?? D.responsesStoreSize,
    forceIncludeUsage: values['enable-force-include-usage'] === true,
    logLevel: oneOf('--log-level', values['log-level'], LOG_LEVELS) ?? D.logLevel,
    stepTimeline,
  };
}

function positive(name: string, raw: string | undefined): number | undefined {
  const value = integerFlag(name, raw);
  if (value !== undefined && value < 1) throw invalidArgument(`${name} must be positive (got ${value})`);
  return value;
}

/** A queue limit: a positive integer, or 0 for none. */
function limitOrNone(name: string, raw: string | undefined, fallback: number | null): number | null {
  const value = integerFlag(name, raw);
  if (value === undefined) return fallback;
  if (value < 0) throw invalidArgument(`${name} must not be negative (got ${value}; 0 = no limit)`);
  return value === 0 ? null : value;
}

/** A positive number of seconds, in milliseconds. */
function secondsFlag(name: string, raw: string | undefined, fallbackMs: number): number {
  const value = numberFlag(name, raw);
  if (value === undefined) return fallbackMs;
  if (value <= 0) throw invalidArgument(`${name} must be a positive number of seconds (got ${value})`);
  return value * 1000;
}
