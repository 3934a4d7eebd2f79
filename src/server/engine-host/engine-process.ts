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
// A rank of its tensor- or pipeline-parallel run died: this engine can never step again, and would
// fail every request it took. Its process exits instead, so that the server routes around it and
// restarts the replica (its requests in flight fail with a 503, as at any replica's death).
const broken = (error: Error) => {
  process.stderr.write(`keel: this replica's engine is broken (${error.message}); its process exits for the server to restart it\n`);
  process.exit(1);
};
// A terminal's Ctrl-C (or hang-up) signals every process of its group, this one too: the server
// drives the shutdown (its requests finish, then 'close': the step timeline written out, the
// engine freed), and ends this process by closing the channel.
for (const signal of ['SIGINT', 'SIGHUP'] as const) process.on(signal, () => undefined);
process.once('message', (settings: EngineOptions) => void loadAndServe(port, settings, broken));
// The server closed the channel (after the engine stopped) or went away: nothing more will come.
process.on('disconnect', () => process.exit(0));
