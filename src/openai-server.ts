/**
 * Keel's OpenAI-compatible server in a program, what `keel serve` runs (`import { serve } from
 * 'keel/server'`): the engine on a thread of its own (or data-parallel replicas in processes), the
 * HTTP API, metrics and the playground on the same port.
 */
import type { EngineOptions } from './config.ts';
import type { ServerOptions, ShutdownReport } from './server/server.ts';
import { startServing } from './server/start-serving.ts';

/** The HTTP server's settings: `keel serve`'s flags (docs/server.md), `DEFAULT_SERVER_OPTIONS` where left out. */
export type ServerSettings = Omit<ServerOptions, 'engine'>;

export interface ServeOptions {
  /** The model and the engine, as `LLM.load` takes them. */
  engine?: EngineOptions;
  /** Where and how to serve: 127.0.0.1:8000 by default (port 0 picks a free one). */
  server?: Partial<ServerSettings>;
}

export interface OpenAIServer {
  /** Base URL, e.g. http://127.0.0.1:8000; the API is under /v1. */
  url: string;
  /** The model name clients give (`servedModelName`, else the model directory's name). */
  model: string;
  /**
   * Graceful shutdown, as SIGTERM gives `keel serve`: stops accepting connections, lets requests in
   * flight finish for up to `shutdownTimeoutMs` (or `timeoutMs`), cuts the rest, then closes the
   * engine. Resolves with how many requests were cut; rejects if the engine failed to close.
   */
  close(options?: { timeoutMs?: number }): Promise<ShutdownReport>;
  /**
   * Resolves, with the cause, if the engine stops for good without being closed (every replica
   * died past its restarts): the server then answers 503 until it is closed.
   */
  stopped: Promise<Error>;
}

/** Loads the model and serves it; the engine is closed again if the server cannot start. */
export async function serve(options: ServeOptions = {}): Promise<OpenAIServer> {
  const { engine, server } = await startServing(options.engine ?? {}, options.server ?? {});
  return {
    url: server.url,
    model: options.server?.servedModelName ?? engine.info.model,
    stopped: engine.stopped,
    async close(closeOptions) {
      const report = await server.close(closeOptions);
      const failure = await engine.close();
      if (failure) throw failure;
      return report;
    },
  };
}

export type { ShutdownReport };
