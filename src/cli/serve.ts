import { parseArgs } from 'node:util';
import { invalidArgument } from '../errors.ts';
import { EngineClient } from '../server/engine-host/engine-client.ts';
import { LOG_LEVELS } from '../server/json-logger.ts';
import { DEFAULT_SERVER_OPTIONS, PROMPT_BYTES_PER_TOKEN, startServer, type RunningServer, type ServerOptions } from '../server/server.ts';
import { ENGINE_FLAGS, ENGINE_FLAGS_HELP, engineConfigFromFlags, integerFlag, numberFlag, oneOf } from './engine-flags.ts';

const D = DEFAULT_SERVER_OPTIONS;
const seconds = (ms: number) => ms / 1000;

export const SERVE_HELP = `Usage: keel serve [options]

Serves the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions,
/v1/models, /tokenize, /detokenize, /health, /metrics) with a web playground at /. The engine runs
on a thread of its own, request bodies are read on --preprocess-threads more: a long step or a
huge prompt never holds up the other clients.
SIGTERM or Ctrl-C stops accepting connections, lets requests in flight finish (up to
--shutdown-timeout), then exits; a second Ctrl-C aborts them at once.

  --host HOST                    address to bind (default ${D.host}; 0.0.0.0 for every interface)
  --port N                       port (default ${D.port}; 0 picks a free one)
  --api-key KEY                  require "Authorization: Bearer KEY" on the API (default: env KEEL_API_KEY)
  --served-model-name NAME       the model name clients use (default: the model directory's name)

Limits (a request over one alone is a 413; one that does not fit beside those waiting, a 429):
  --max-n N                      largest n a request may ask for (default ${D.maxN})
  --max-prompts-per-request N    most prompts in one /v1/completions batch (default ${D.maxPromptsPerRequest})
  --max-prompt-bytes N           largest prompt in UTF-8 bytes, checked before tokenizing
                                 (default ${PROMPT_BYTES_PER_TOKEN} per token of the max model length)
  --max-queued-sequences N       most sequences (prompts × n) waiting for the engine (default ${D.maxQueuedSequences}; 0 = no limit)
  --max-queued-tokens N          most prompt tokens waiting for the engine (default ${D.maxQueuedTokens}; 0 = no limit)
  --max-body-bytes N             largest request body (default ${D.maxBodyBytes})

  --shutdown-timeout S           seconds to let requests finish on shutdown (default ${seconds(D.shutdownTimeoutMs)})

  --preprocess-threads N         threads that parse, validate and tokenize requests (default ${D.preprocessThreads})
  --log-level LEVEL              ${LOG_LEVELS.join('|')} (default ${D.logLevel}); JSON lines on stderr

${ENGINE_FLAGS_HELP}`;

const SERVE_FLAGS = {
  ...ENGINE_FLAGS,
  host: { type: 'string' },
  port: { type: 'string' },
  'api-key': { type: 'string' },
  'served-model-name': { type: 'string' },
  'max-n': { type: 'string' },
  'max-prompts-per-request': { type: 'string' },
  'max-prompt-bytes': { type: 'string' },
  'max-queued-sequences': { type: 'string' },
  'max-queued-tokens': { type: 'string' },
  'max-body-bytes': { type: 'string' },
  'shutdown-timeout': { type: 'string' },
  'preprocess-threads': { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function serveCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: SERVE_FLAGS, strict: true });
  if (values.help) {
    console.log(SERVE_HELP);
    return;
  }
  const serverOptions = serverOptionsFromFlags(values);
  const engine = await EngineClient.startThread(engineConfigFromFlags(values));
  let server: RunningServer;
  try {
    server = await startServer({ engine, ...serverOptions });
  } catch (error) {
    await engine.close();
    throw error;
  }
  console.log(`Keel is serving ${engine.info.model} at ${server.url} (playground: ${server.url}/, API: ${server.url}/v1)`);
  try {
    await new Promise<void>((resolve, reject) => {
      let signals = 0;
      const onSignal = (signal: NodeJS.Signals) => {
        signals++;
        if (signals === 1) {
          console.error(`keel: ${signal}: finishing requests in flight (again to abort them)`);
          server.close().then(resolve, reject);
        } else {
          server.close({ timeoutMs: 0 });
        }
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    });
  } finally {
    const closeError = await engine.close();
    if (closeError) console.error(`keel: ${closeError.message}`);
  }
}

type ServeFlagValues = ReturnType<typeof parseArgs<{ options: typeof SERVE_FLAGS }>>['values'];

function serverOptionsFromFlags(values: ServeFlagValues): Omit<ServerOptions, 'engine' | 'logStream'> {
  const port = integerFlag('--port', values.port) ?? D.port;
  if (port < 0 || port > 65535) throw invalidArgument(`--port must be in [0, 65535] (got ${port})`);
  const apiKey = values['api-key'] ?? process.env.KEEL_API_KEY ?? null;
  if (apiKey === '') throw invalidArgument('the API key is empty: give --api-key KEY or unset KEEL_API_KEY');
  const shutdownTimeout = numberFlag('--shutdown-timeout', values['shutdown-timeout']);
  if (shutdownTimeout !== undefined && shutdownTimeout < 0) throw invalidArgument(`--shutdown-timeout must not be negative (got ${shutdownTimeout})`);
  return {
    host: values.host ?? D.host,
    port,
    apiKey,
    servedModelName: values['served-model-name'] ?? null,
    maxN: positive('--max-n', values['max-n']) ?? D.maxN,
    maxPromptsPerRequest: positive('--max-prompts-per-request', values['max-prompts-per-request']) ?? D.maxPromptsPerRequest,
    maxPromptBytes: positive('--max-prompt-bytes', values['max-prompt-bytes']) ?? D.maxPromptBytes,
    maxQueuedSequences: limitOrNone('--max-queued-sequences', values['max-queued-sequences'], D.maxQueuedSequences),
    maxQueuedTokens: limitOrNone('--max-queued-tokens', values['max-queued-tokens'], D.maxQueuedTokens),
    maxBodyBytes: positive('--max-body-bytes', values['max-body-bytes']) ?? D.maxBodyBytes,
    shutdownTimeoutMs: shutdownTimeout === undefined ? D.shutdownTimeoutMs : shutdownTimeout * 1000,
    preprocessThreads: positive('--preprocess-threads', values['preprocess-threads']) ?? D.preprocessThreads,
    logLevel: oneOf('--log-level', values['log-level'], LOG_LEVELS) ?? D.logLevel,
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
