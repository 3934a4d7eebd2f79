import { parentPort, workerData } from 'node:worker_threads';
import type { EngineOptions } from '../../config.ts';
import type { FromEngine, ToEngine } from './engine-protocol.ts';
import type { MessageEndpoint } from '../../threads/ts-worker.ts';
import { loadAndServe } from './load-and-serve.ts';

// The engine's own thread: it loads the model and runs every engine step here, so that no step
// delays the HTTP server's event loop.

const port = parentPort as MessageEndpoint<ToEngine, FromEngine> | null;
if (port === null) throw new Error('engine-thread.ts runs as a worker thread (see engine-client.ts)');
await loadAndServe(port, (workerData as { settings: EngineOptions }).settings);
