import type { EngineOptions } from '../config.ts';
import { EngineReplicas } from './engine-host/engine-replicas.ts';
import { startServer, type RunningServer, type ServerOptions } from './server.ts';

/**
 * Starts the engine (on its thread, or data-parallel replicas) and the HTTP server on it, and
 * closes the engine again if the server cannot start: what `keel serve` and `serve()` both run.
 * `engineEntry`: the engine thread's module, for stand-ins of the engine (the chaos soak's).
 */
export async function startServing(
  engineOptions: EngineOptions,
  serverOptions: Partial<Omit<ServerOptions, 'engine'>>,
  engineEntry?: URL,
): Promise<{ engine: EngineReplicas; server: RunningServer }> {
  const engine = await EngineReplicas.start(engineOptions, engineEntry);
  try {
    return { engine, server: await startServer({ ...serverOptions, engine }) };
  } catch (error) {
    await engine.close();
    throw error;
  }
}
