import type { Worker } from 'node:worker_threads';
import { shuttingDown } from '../openai-errors.ts';
import { fromThreadError } from '../thread-errors.ts';
import { siblingModule, startTsWorker } from '../../threads/ts-worker.ts';
import type { ChatContinuation, FromPreprocess, PreprocessKind, PreprocessSettings, Prepared } from './preprocess-protocol.ts';

const PREPROCESS_THREAD = siblingModule('./preprocess-thread', import.meta.url);

interface Job {
  id: number;
  kind: PreprocessKind;
  body: Uint8Array;
  continuation: ChatContinuation | null;
  resolve(result: Prepared[PreprocessKind]): void;
  reject(error: Error): void;
}

interface PoolThread {
  worker: Worker;
  job: Job | null;
}

/**
 * Threads that read request bodies (preprocess-thread.ts), each one body at a time; bodies wait
 * in arrival order for a free thread. A thread that dies fails its body with a 500 and is replaced.
 */
export class PreprocessPool {
  private readonly settings: PreprocessSettings;
  private readonly loraAdapters: () => readonly string[];
  private readonly threads: PoolThread[] = [];
  private readonly waiting: Job[] = [];
  private nextId = 1;
  private closed = false;

  private constructor(settings: PreprocessSettings, loraAdapters: () => readonly string[]) {
    this.settings = settings;
    this.loraAdapters = loraAdapters;
  }

  /**
   * Starts `size` threads and waits until each has loaded the tokenizer. Each body goes with the
   * names `loraAdapters` gives when it is dispatched (adapters load and unload while serving).
   */
  static async start(settings: PreprocessSettings, size: number, loraAdapters: () => readonly string[] = () => []): Promise<PreprocessPool> {
    const pool = new PreprocessPool(settings, loraAdapters);
    try {
      await Promise.all(Array.from({ length: size }, () => pool.addThread()));
    } catch (error) {
      await pool.close();
      throw error;
    }
    return pool;
  }

  /**
   * What the body becomes (see Prepared); rejects with the error to answer the request with. A
   * chat body that is a turn of a stored conversation comes with its `continuation`.
   */
  run<K extends PreprocessKind>(kind: K, body: Buffer, continuation: ChatContinuation | null = null): Promise<Prepared[K]> {
    return new Promise<Prepared[K]>((resolve, reject) => {
      this.waiting.push({ id: this.nextId++, kind, body, continuation, resolve: resolve as Job['resolve'], reject });
      this.dispatch();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const threads = this.threads.splice(0);
    for (const job of [...this.waiting.splice(0), ...threads.flatMap((t) => (t.job ? [t.job] : []))]) job.reject(shuttingDown());
    await Promise.all(threads.map((t) => t.worker.terminate()));
  }

  private async addThread(): Promise<void> {
    const worker = startTsWorker(PREPROCESS_THREAD, this.settings, 'keel-preprocess');
    const thread: PoolThread = { worker, job: null };
    await new Promise<void>((resolve, reject) => {
      worker.on('message', (message: FromPreprocess) => {
        if (message.type === 'ready') resolve();
        else if (message.type === 'load-failed') reject(fromThreadError(message.error));
        else this.onMessage(thread, message);
      });
      worker.once('error', (error) => {
        reject(error);
        this.lose(thread, error);
      });
      worker.once('exit', (code) => {
        const error = new Error(`a preprocessing thread exited with code ${code}`);
        reject(error);
        this.lose(thread, error);
      });
    });
    if (this.closed) {
      await worker.terminate();
      return;
    }
    this.threads.push(thread);
    this.dispatch();
  }

  private dispatch(): void {
    for (const thread of this.threads) {
      if (thread.job !== null) continue;
      const job = this.waiting.shift();
      if (!job) return;
      thread.job = job;
      // A body that owns its whole buffer moves to the thread without a copy.
      const owns = job.body.byteOffset === 0 && job.body.byteLength === job.body.buffer.byteLength && job.body.buffer instanceof ArrayBuffer;
      thread.worker.postMessage({ id: job.id, kind: job.kind, body: job.body, loraAdapters: this.loraAdapters(), continuation: job.continuation }, owns ? [job.body.buffer as ArrayBuffer] : []);
    }
  }

  private onMessage(thread: PoolThread, message: FromPreprocess): void {
    const job = thread.job;
    if (job === null || (message.type !== 'done' && message.type !== 'failed') || message.id !== job.id) return;
    thread.job = null;
    if (message.type === 'done') job.resolve(message.result);
    else job.reject(fromThreadError(message.error));
    this.dispatch();
  }

  /** A thread died (out of memory on a body, say): its body fails, a fresh thread takes its place. */
  private lose(thread: PoolThread, cause: Error): void {
    const index = this.threads.indexOf(thread);
    if (index < 0) return;
    this.threads.splice(index, 1);
    thread.job?.reject(cause);
    if (!this.closed) {
      this.addThread().catch((error: unknown) => {
        for (const job of this.waiting.splice(0)) job.reject(error as Error);
      });
    }
  }
}
