import { parentPort, workerData } from 'node:worker_threads';
import type { EngineOptions } from '../../config.ts';
import { LLM } from '../../engine/llm.ts';
import { toThreadError } from '../thread-errors.ts';
import type { FromEngine, ToEngine } from './engine-protocol.ts';
import type { MessageEndpoint } from '../../threads/ts-worker.ts';
import { serveEngine } from './serve-engine.ts';

// The engine's own thread: it loads the model and runs every engine step here, so that no step
// delays the HTTP server's event loop.

const port = parentPort as MessageEndpoint<ToEngine, FromEngine> | null;
if (port === null) throw new Error('engine-thread.ts runs as a worker thread (see engine-client.ts)');
const { settings } = workerData as { settings: EngineOptions };
try {
  const llm = await LLM.load(settings);
  serveEngine(port, llm, () => llm.close());
} catch (error) {
  port.postMessage({ type: 'load-failed', error: toThreadError(error) });
}
