import { extname } from 'node:path';
import { Worker, type Transferable } from 'node:worker_threads';

const BOOT = new URL('./ts-worker-boot.mjs', import.meta.url);

/**
 * The module `name` beside the module at `base` (its import.meta.url), with base's own extension:
 * `.ts` when Keel runs from its sources, `.js` from the published build.
 */
export function siblingModule(name: string, base: string): URL {
  return new URL(`${name}${extname(new URL(base).pathname)}`, base);
}

/**
 * A worker thread running the module at `entry` (a file URL, TypeScript or JavaScript), which reads its own
 * settings from `workerData.settings` (holding any MessagePort of `transferList`). The parent's Node flags are not passed on: the thread gets
 * only what the boot module sets up.
 */
export function startTsWorker(entry: URL, settings: unknown, name: string, transferList: Transferable[] = []): Worker {
  return new Worker(BOOT, { workerData: { entry: entry.href, settings }, execArgv: [], name, transferList });
}

/** Either end of a channel between threads: a worker's parentPort, a Worker, or a MessagePort. */
export interface MessageEndpoint<In, Out> {
  postMessage(message: Out, transfer?: ArrayBuffer[]): void;
  on(event: 'message', listener: (message: In) => void): unknown;
  off(event: 'message', listener: (message: In) => void): unknown;
}
