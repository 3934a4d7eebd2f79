import type { EngineOptions } from '../../config.ts';
import type { MessageEndpoint } from '../../threads/ts-worker.ts';
import type { FromEngine, ToEngine } from './engine-protocol.ts';
import { loadAndServe } from './load-and-serve.ts';

// One data-parallel replica's engine, in a process of its own (EngineClient.startProcess): on CUDA
// its environment's CUDA_VISIBLE_DEVICES shows it only its own GPUs, and the worker processes of
// its tensor- or pipeline-parallel ranks inherit that. The first message over IPC is its settings;
// the engine protocol follows, as over a worker thread's port.

if (process.send === undefined) throw new Error('engine-process.ts runs as a child process with an IPC channel (see engine-client.ts)');

const port: MessageEndpoint<ToEngine, FromEngine> = {
  // The server may have gone: then there is no one to tell.
  postMessage: (message) => void (process.connected && process.send!(message)),
  on: (event, listener) => process.on(event, listener as (message: unknown) => void),
  off: (event, listener) => process.off(event, listener as (message: unknown) => void),
};
process.once('message', (settings: EngineOptions) => void loadAndServe(port, settings));
// The server closed the channel (after the engine stopped) or went away: nothing more will come.
process.on('disconnect', () => process.exit(0));
