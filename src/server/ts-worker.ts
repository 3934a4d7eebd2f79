import { Worker } from 'node:worker_threads';

const BOOT = new URL('./ts-worker-boot.mjs', import.meta.url);

/**
 * A worker thread running the TypeScript module at `entry` (a file URL), which reads its own
 * settings from `workerData.settings`. The parent's Node flags are not passed on: the thread gets
 * only what the boot module sets up.
 */
export function startTsWorker(entry: URL, settings: unknown, name: string): Worker {
  return new Worker(BOOT, { workerData: { entry: entry.href, settings }, execArgv: [], name });
}

/** Either end of a channel between threads: a worker's parentPort, a Worker, or a MessagePort. */
export interface MessageEndpoint<In, Out> {
  postMessage(message: Out, transfer?: ArrayBuffer[]): void;
  on(event: 'message', listener: (message: In) => void): unknown;
  off(event: 'message', listener: (message: In) => void): unknown;
}
