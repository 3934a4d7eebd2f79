import { Writable } from 'node:stream';
import type { EngineOptions } from '../../src/config.ts';
import { DEFAULT_MODEL_DIR } from '../../src/engine/load-engine.ts';
import { EngineReplicas } from '../../src/server/engine-host/engine-replicas.ts';
import { startServer, type ServerOptions } from '../../src/server/server.ts';
import { TEST_BACKEND } from './test-backend.ts';
import { tinyChatModelDir } from './tiny-chat-model.ts';

export interface TinyServer {
  url: string;
  engine: EngineReplicas;
  /** The server's log lines, parsed. */
  logs: Record<string, unknown>[];
  close(): Promise<void>;
}

/**
 * A server on a free loopback port with its engine on its own thread (on TEST_BACKEND), for one
 * test file: over the embedded default model with `defaultModel`, over `modelDir` when given, else
 * over a fresh tiny random model. Logs are kept in memory.
 */
export async function startTinyServer(
  options: {
    engine?: EngineOptions;
    server?: Partial<Omit<ServerOptions, 'engine'>>;
    model?: Record<string, unknown>;
    defaultModel?: boolean;
    /** A model directory the caller owns (and removes). */
    modelDir?: string;
    /** The engine thread's module, for tests that inject faults (default: the real one). */
    engineEntry?: URL;
  } = {},
): Promise<TinyServer> {
  const given = options.modelDir ?? (options.defaultModel ? DEFAULT_MODEL_DIR : null);
  const model = given !== null ? { dir: given, remove: () => undefined } : tinyChatModelDir(options.model);
  const engine = await EngineReplicas.start({ model: model.dir, backend: TEST_BACKEND, showProgress: false, numKvBlocks: 256, ...options.engine }, options.engineEntry);
  const logs: Record<string, unknown>[] = [];
  const logStream = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line));
      done();
    },
  });
  const server = await startServer({ engine, port: 0, logLevel: 'debug', logStream, ...options.server });
  return {
    url: server.url,
    engine,
    logs,
    close: async () => {
      await server.close();
      await engine.close();
      model.remove();
    },
  };
}

export interface EngineStatsBody {
  running: number;
  waiting: number;
  in_flight_requests: number;
  kv_cache: { total_blocks: number; free_blocks: number; used_blocks: number; cached_blocks: number };
  preemptions_total: number;
  generation_tokens_total: number;
}

export async function engineStats(url: string, headers: Record<string, string> = {}): Promise<EngineStatsBody> {
  const response = await fetch(`${url}/v1/engine/stats`, { headers });
  return (await response.json()) as EngineStatsBody;
}

/** Waits until nothing runs or waits and every KV block is back in the free pool. */
export async function waitForIdleEngine(url: string, timeoutMs = 5000): Promise<EngineStatsBody> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stats = await engineStats(url);
    const idle = stats.running === 0 && stats.waiting === 0 && stats.in_flight_requests === 0 && stats.kv_cache.free_blocks === stats.kv_cache.total_blocks;
    if (idle || Date.now() > deadline) return stats;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The value of a sample in /metrics text (the benchmark client reads them the same way). */
export { metricSample as metricValue } from '../../src/bench/server-counters.ts';
