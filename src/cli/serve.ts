import { parseArgs } from 'node:util';
import { invalidArgument } from '../errors.ts';
import { LLM } from '../engine/llm.ts';
import { LOG_LEVELS } from '../server/json-logger.ts';
import { DEFAULT_SERVER_OPTIONS, startServer } from '../server/server.ts';
import { ENGINE_FLAGS, ENGINE_FLAGS_HELP, engineConfigFromFlags, integerFlag, numberFlag, oneOf } from './engine-flags.ts';

export const SERVE_HELP = `Usage: keel serve [options]

Serves the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions,
/v1/models, /tokenize, /detokenize, /health, /metrics) with a web playground at /.
SIGTERM or Ctrl-C stops accepting connections, lets requests in flight finish (up to
--shutdown-timeout), then exits; a second Ctrl-C aborts them at once.

  --host HOST                    address to bind (default ${DEFAULT_SERVER_OPTIONS.host}; 0.0.0.0 for every interface)
  --port N                       port (default ${DEFAULT_SERVER_OPTIONS.port}; 0 picks a free one)
  --api-key KEY                  require "Authorization: Bearer KEY" on the API (default: env KEEL_API_KEY)
  --served-model-name NAME       the model name clients use (default: the model directory's name)
  --max-queued-requests N        answer 429 while N sequences wait (default ${DEFAULT_SERVER_OPTIONS.maxQueuedRequests}; 0 = no limit)
  --shutdown-timeout S           seconds to let requests finish on shutdown (default ${DEFAULT_SERVER_OPTIONS.shutdownTimeoutMs / 1000})
  --max-body-bytes N             largest request body (default ${DEFAULT_SERVER_OPTIONS.maxBodyBytes})
  --log-level LEVEL              ${LOG_LEVELS.join('|')} (default ${DEFAULT_SERVER_OPTIONS.logLevel}); JSON lines on stderr

${ENGINE_FLAGS_HELP}`;

export async function serveCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...ENGINE_FLAGS,
      host: { type: 'string' },
      port: { type: 'string' },
      'api-key': { type: 'string' },
      'served-model-name': { type: 'string' },
      'max-queued-requests': { type: 'string' },
      'shutdown-timeout': { type: 'string' },
      'max-body-bytes': { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(SERVE_HELP);
    return;
  }
  const port = integerFlag('--port', values.port) ?? DEFAULT_SERVER_OPTIONS.port;
  if (port < 0 || port > 65535) throw invalidArgument(`--port must be in [0, 65535] (got ${port})`);
  const maxQueued = nonNegative('--max-queued-requests', integerFlag('--max-queued-requests', values['max-queued-requests']));
  const shutdownTimeout = nonNegative('--shutdown-timeout', numberFlag('--shutdown-timeout', values['shutdown-timeout']));
  const maxBodyBytes = nonNegative('--max-body-bytes', integerFlag('--max-body-bytes', values['max-body-bytes']));
  if (maxBodyBytes === 0) throw invalidArgument('--max-body-bytes must be positive');
  const apiKey = values['api-key'] ?? process.env.KEEL_API_KEY ?? null;
  if (apiKey === '') throw invalidArgument('the API key is empty: give --api-key KEY or unset KEEL_API_KEY');
  const serverOptions = {
    host: values.host ?? DEFAULT_SERVER_OPTIONS.host,
    port,
    apiKey,
    servedModelName: values['served-model-name'] ?? null,
    maxQueuedRequests: maxQueued === undefined ? DEFAULT_SERVER_OPTIONS.maxQueuedRequests : maxQueued === 0 ? null : maxQueued,
    shutdownTimeoutMs: shutdownTimeout === undefined ? DEFAULT_SERVER_OPTIONS.shutdownTimeoutMs : shutdownTimeout * 1000,
    maxBodyBytes: maxBodyBytes ?? DEFAULT_SERVER_OPTIONS.maxBodyBytes,
    logLevel: oneOf('--log-level', values['log-level'], LOG_LEVELS) ?? DEFAULT_SERVER_OPTIONS.logLevel,
  };

  const llm = await LLM.load(engineConfigFromFlags(values));
  try {
    const server = await startServer({ llm, ...serverOptions });
    console.log(`Keel is serving ${llm.config.model} at ${server.url} (playground: ${server.url}/, API: ${server.url}/v1)`);
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
    await llm.close();
  }
}

function nonNegative(name: string, value: number | undefined): number | undefined {
  if (value !== undefined && value < 0) throw invalidArgument(`${name} must not be negative (got ${value})`);
  return value;
}
