import type { AddressInfo } from 'node:net';
import type { Writable } from 'node:stream';
import { KeelError } from '../errors.ts';
import { Admission } from './admission.ts';
import { resolveAllowedHosts } from './allowed-hosts.ts';
import { buildApp } from './app.ts';
import type { EngineReplicas } from './engine-host/engine-replicas.ts';
import { InFlightRequests } from './in-flight.ts';
import { JsonLogger, type LogLevel } from './json-logger.ts';
import { ServerMetrics } from './metrics.ts';
import { PreprocessPool } from './preprocess/preprocess-pool.ts';
import type { ServingContext } from './serving-context.ts';
import { ResponseStore } from './responses/response-store.ts';
import { TokenRate } from './token-rate.ts';
import { chooseToolCallFormat } from './tool-calls/tool-call-formats.ts';

export interface ServerOptions {
  /** The engines, started (EngineReplicas.start); the server does not close them. */
  engine: EngineReplicas;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Required as `Authorization: Bearer <key>` on the API when set. */
  apiKey: string | null;
  /** The model name clients use; defaults to the model directory's name. */
  servedModelName: string | null;
  /** Host names the server answers to (`*`: any); null: the loopback names when bound to loopback, else any. */
  allowedHosts: string[] | null;
  /** Largest `n` a request may ask for. */
  maxN: number;
  /** Most prompts in one /v1/completions batch. */
  maxPromptsPerRequest: number;
  /** Largest prompt in UTF-8 bytes, refused before tokenizing; null: PROMPT_BYTES_PER_TOKEN × the model's max length. */
  maxPromptBytes: number | null;
  /** Refuse (429) what would make more sequences wait for the engine than this; null = no limit. */
  maxQueuedSequences: number | null;
  /** Refuse (429) what would make more prompt tokens wait for the engine than this; null = no limit. */
  maxQueuedTokens: number | null;
  /** Let special-token strings in chat messages be control tokens (else they are text). */
  allowSpecialTokens: boolean;
  /** Threads that parse, validate and tokenize request bodies. */
  preprocessThreads: number;
  maxBodyBytes: number;
  /** Time for a request's headers to arrive. */
  headerTimeoutMs: number;
  /** Time for a whole request, headers and body, to arrive. */
  bodyTimeoutMs: number;
  /** A keep-alive connection idle this long, or a response whose client has read nothing for this long, is closed. */
  idleTimeoutMs: number;
  /** Open connections beyond this are closed as they arrive. */
  maxConnections: number;
  /** How long `close` lets in-flight requests finish before cutting them. */
  shutdownTimeoutMs: number;
  /** The tool-call parser by name; null picks it from the chat template. */
  toolCallParser: string | null;
  /** Streams send usage whether or not the client asked for it (vLLM's --enable-force-include-usage). */
  forceIncludeUsage: boolean;
  /** Most responses kept for GET /v1/responses/{id} and previous_response_id (least recently used go first). */
  responsesStoreSize: number;
  logLevel: LogLevel;
  /**
   * Record the engines' step timeline into this file from the start (EngineReplicas.startStepTimeline),
   * with POST /start_profile and /stop_profile to stop and resume it; null: none, and no such routes.
   */
  stepTimeline: string | null;
  /** Where log lines go (stderr by default). */
  logStream: Writable;
}

/**
 * No prompt averages more than a few bytes per token (English text about 4, code 3 to 5, runs of
 * spaces up to 16 in some vocabularies): a prompt of more bytes than this many per token of the
 * context could never fit once tokenized, so it is refused before tokenizing.
 */
export const PROMPT_BYTES_PER_TOKEN = 32;

export const DEFAULT_SERVER_OPTIONS: Omit<ServerOptions, 'engine'> = {
  host: '127.0.0.1',
  port: 8000,
  apiKey: null,
  servedModelName: null,
  allowedHosts: null,
  maxN: 128,
  maxPromptsPerRequest: 256,
  maxPromptBytes: null,
  maxQueuedSequences: 1024,
  maxQueuedTokens: 1_048_576,
  allowSpecialTokens: false,
  preprocessThreads: 2,
  maxBodyBytes: 16 * 1024 * 1024,
  headerTimeoutMs: 10_000,
  bodyTimeoutMs: 60_000,
  idleTimeoutMs: 60_000,
  maxConnections: 4096,
  shutdownTimeoutMs: 30_000,
  toolCallParser: null,
  forceIncludeUsage: false,
  responsesStoreSize: 1000,
  logLevel: 'info',
  stepTimeline: null,
  logStream: process.stderr,
};

/** How a shutdown went. */
export interface ShutdownReport {
  /** Requests still in flight when the drain ran out of time, which were cut. */
  cut: number;
}

export interface RunningServer {
  /** Base URL, e.g. http://127.0.0.1:8000 */
  url: string;
  /**
   * Graceful shutdown: stops accepting connections at once, lets in-flight requests finish for up
   * to shutdownTimeoutMs (or `timeoutMs`), then cuts the rest: their generations are aborted,
   * streams get a moment to send a `shutting_down` event, and every connection still open is
   * closed. Calling it again with timeoutMs 0 while draining cuts at once.
   */
  close(options?: { timeoutMs?: number }): Promise<ShutdownReport>;
}

/** Window over which the engine-stats endpoint reports tokens per second. */
const RATE_WINDOW_MS = 5000;
/** After the drain timeout, how long cut streams get to send their error event before their connections close. */
const CUT_GRACE_MS = 1000;

/** Starts the OpenAI-compatible server over a running engine. */
export async function startServer(options: Partial<ServerOptions> & { engine: EngineReplicas }): Promise<RunningServer> {
  const config: ServerOptions = { ...DEFAULT_SERVER_OPTIONS, ...options };
  const { engine } = config;
  const servedModelName = config.servedModelName ?? engine.info.model;
  const logger = new JsonLogger(config.logLevel, config.logStream);
  const limits = {
    maxN: config.maxN,
    maxPromptsPerRequest: config.maxPromptsPerRequest,
    maxPromptBytes: config.maxPromptBytes ?? PROMPT_BYTES_PER_TOKEN * engine.info.maxModelLen,
    maxQueuedSequences: config.maxQueuedSequences,
    maxQueuedTokens: config.maxQueuedTokens,
  };
  const toolCallFormat = chooseToolCallFormat(config.toolCallParser, engine.info.chatTemplate);
  // Before anything else starts (nothing to undo if the file is refused): every step served is recorded.
  if (config.stepTimeline !== null) await engine.startStepTimeline(config.stepTimeline);
  const preprocess = await PreprocessPool.start(
    {
      tokenizerPath: engine.info.hasTokenizer ? engine.info.modelPath : null,
      servedModelName,
      maxModelLen: engine.info.maxModelLen,
      vocabSize: engine.info.vocabSize,
      samplingDefaults: engine.info.samplingDefaults,
      limits,
      allowSpecialTokens: config.allowSpecialTokens,
      toolCallParser: toolCallFormat?.name ?? null,
    },
    config.preprocessThreads,
    () => engine.loraAdapters?.map((a) => a.name) ?? [],
  );
  const ctx: ServingContext = {
    engine,
    preprocess,
    admission: new Admission(limits),
    servedModelName,
    metrics: new ServerMetrics(servedModelName, engine),
    inFlight: new InFlightRequests(),
    logger,
    generationRate: new TokenRate(() => engine.stats().generationTokensTotal, RATE_WINDOW_MS),
    toolCallFormat,
    forceIncludeUsage: config.forceIncludeUsage,
    responses: new ResponseStore(config.responsesStoreSize),
  };
  const app = buildApp(ctx, {
    apiKey: config.apiKey,
    allowedHosts: resolveAllowedHosts(config.allowedHosts, config.host),
    maxBodyBytes: config.maxBodyBytes,
    headerTimeoutMs: config.headerTimeoutMs,
    bodyTimeoutMs: config.bodyTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    maxConnections: config.maxConnections,
    stepTimeline: config.stepTimeline,
  });
  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (error) {
    ctx.generationRate.stop();
    await preprocess.close();
    await app.close();
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') {
      throw new KeelError('unavailable', `cannot listen on ${config.host}:${config.port}: ${(error as Error).message}`);
    }
    throw error;
  }
  const address = app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  logger.log('info', 'listening', { url, model: servedModelName, backend: engine.info.backend, replicas: engine.size, tool_call_parser: toolCallFormat?.name ?? null });
  engine.stopped.then((cause) => logger.log('error', 'the engine stopped', { error: cause.stack ?? cause.message }));
  if (engine.size > 1) {
    engine.onReplicaEvent((replica, event) => {
      const restart = (ms: number | null) => ({ restart_in_ms: ms });
      if (event.kind === 'stopped') logger.log('error', 'a replica stopped; the others serve on', { replica, error: event.cause.stack ?? event.cause.message, ...restart(event.restartInMs) });
      else if (event.kind === 'restart-failed') logger.log('error', 'a replica failed to restart', { replica, error: event.error.message, ...restart(event.restartInMs) });
      else logger.log('info', 'a replica restarted and serves again', { replica, restarts: event.restarts });
    });
  }

  let giveUp: () => void = () => undefined;
  const gaveUp = new Promise<void>((resolve) => (giveUp = resolve));
  let closing: Promise<ShutdownReport> | null = null;

  /** Whether the requests in flight all ended within `ms` (or before a forced close). */
  const drainedWithin = async (ms: number): Promise<boolean> => {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    const drained = await Promise.race([ctx.inFlight.whenIdle().then(() => true), timedOut, gaveUp.then(() => false)]);
    clearTimeout(timer);
    return drained;
  };

  const shutdown = async (timeoutMs: number): Promise<ShutdownReport> => {
    ctx.inFlight.startDraining();
    const closed = app.close();
    logger.log('info', 'shutting down', { in_flight_requests: ctx.inFlight.size, timeout_ms: timeoutMs });
    let cut = 0;
    if (!(await drainedWithin(timeoutMs))) {
      cut = ctx.inFlight.size;
      logger.log('warn', 'cutting requests still in flight', { in_flight_requests: cut });
      ctx.inFlight.abortAll();
      await drainedWithin(CUT_GRACE_MS);
    }
    // Whatever is still open (a client that stopped reading, idle keep-alive) would hold the close open.
    app.server.closeAllConnections();
    await closed;
    ctx.generationRate.stop();
    await preprocess.close();
    logger.log('info', 'stopped', { cut_requests: cut });
    return { cut };
  };

  return {
    url,
    close: (closeOptions = {}) => {
      const timeoutMs = closeOptions.timeoutMs ?? config.shutdownTimeoutMs;
      if (closing) {
        if (timeoutMs === 0) giveUp();
        return closing;
      }
      closing = shutdown(timeoutMs);
      return closing;
    },
  };
}
