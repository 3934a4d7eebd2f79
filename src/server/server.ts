import type { AddressInfo } from 'node:net';
import { basename } from 'node:path';
import type { Writable } from 'node:stream';
import type { LLM } from '../engine/llm.ts';
import { KeelError } from '../errors.ts';
import { buildApp } from './app.ts';
import { InFlightRequests } from './in-flight.ts';
import { JsonLogger, type LogLevel } from './json-logger.ts';
import { ServerMetrics } from './metrics.ts';
import type { ServingContext } from './serving-context.ts';
import { TokenRate } from './token-rate.ts';

export interface ServerOptions {
  /** The loaded model; the server does not close it. */
  llm: LLM;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Required as `Authorization: Bearer <key>` on the API when set. */
  apiKey: string | null;
  /** The model name clients use; defaults to the model directory's name. */
  servedModelName: string | null;
  /** Refuse new generation requests (429) while this many sequences wait; null = no limit. */
  maxQueuedRequests: number | null;
  maxBodyBytes: number;
  /** How long `close` lets in-flight requests finish before aborting them. */
  shutdownTimeoutMs: number;
  logLevel: LogLevel;
  /** Where log lines go (stderr by default). */
  logStream: Writable;
}

export const DEFAULT_SERVER_OPTIONS: Omit<ServerOptions, 'llm'> = {
  host: '127.0.0.1',
  port: 8000,
  apiKey: null,
  servedModelName: null,
  maxQueuedRequests: 1024,
  maxBodyBytes: 16 * 1024 * 1024,
  shutdownTimeoutMs: 30_000,
  logLevel: 'info',
  logStream: process.stderr,
};

export interface RunningServer {
  /** Base URL, e.g. http://127.0.0.1:8000 */
  url: string;
  /**
   * Graceful shutdown: stops accepting connections at once, lets in-flight requests finish for up
   * to shutdownTimeoutMs (or `timeoutMs`), then aborts the rest. Calling it again with timeoutMs 0
   * while draining aborts what is still in flight at once.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
}

/** Window over which the engine-stats endpoint reports tokens per second. */
const RATE_WINDOW_MS = 5000;

/** Starts the OpenAI-compatible server over a loaded model. */
export async function startServer(options: Partial<ServerOptions> & { llm: LLM }): Promise<RunningServer> {
  const config: ServerOptions = { ...DEFAULT_SERVER_OPTIONS, ...options };
  const { llm } = config;
  const servedModelName = config.servedModelName ?? basename(llm.config.model);
  const logger = new JsonLogger(config.logLevel, config.logStream);
  const ctx: ServingContext = {
    llm,
    servedModelName,
    maxQueuedRequests: config.maxQueuedRequests,
    metrics: new ServerMetrics(servedModelName, () => llm.stats()),
    inFlight: new InFlightRequests(),
    logger,
    generationRate: new TokenRate(() => llm.stats().generationTokensTotal, RATE_WINDOW_MS),
  };
  const app = buildApp(ctx, { apiKey: config.apiKey, maxBodyBytes: config.maxBodyBytes });
  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (error) {
    ctx.generationRate.stop();
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') {
      throw new KeelError('unavailable', `cannot listen on ${config.host}:${config.port}: ${(error as Error).message}`);
    }
    throw error;
  }
  const address = app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  logger.log('info', 'listening', { url, model: servedModelName, backend: llm.backendName });

  let giveUp: () => void = () => undefined;
  const gaveUp = new Promise<void>((resolve) => (giveUp = resolve));
  let closing: Promise<void> | null = null;

  const shutdown = async (timeoutMs: number): Promise<void> => {
    ctx.inFlight.startDraining();
    const closed = app.close();
    logger.log('info', 'shutting down', { in_flight_requests: ctx.inFlight.size, timeout_ms: timeoutMs });
    const timer = setTimeout(giveUp, timeoutMs);
    const drained = await Promise.race([ctx.inFlight.whenIdle().then(() => true), gaveUp.then(() => false)]);
    clearTimeout(timer);
    if (!drained) {
      logger.log('warn', 'aborting requests still in flight', { in_flight_requests: ctx.inFlight.size });
      ctx.inFlight.abortAll();
      await ctx.inFlight.whenIdle();
    }
    // Keep-alive connections that went idle during the drain would otherwise hold the close open.
    app.server.closeAllConnections();
    await closed;
    ctx.generationRate.stop();
    logger.log('info', 'stopped');
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
