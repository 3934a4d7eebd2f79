import { EventEmitter } from 'node:events';
import { parentPort, workerData } from 'node:worker_threads';
import type { EngineConfig } from '../../src/config.ts';
import { LLM } from '../../src/engine/llm.ts';
import { KeelError } from '../../src/errors.ts';
import type { FromEngine, ToEngine } from '../../src/server/engine-host/engine-protocol.ts';
import { serveEngine } from '../../src/server/engine-host/serve-engine.ts';
import { toThreadError } from '../../src/server/thread-errors.ts';
import type { MessageEndpoint } from '../../src/threads/ts-worker.ts';

// The engine thread with faults on demand, for test/server/engine-failures.test.ts: a prompt whose
// first token is STEP_FAILURE_TOKEN fails every request in flight as a failing engine step does
// (LLM rejects them all with the step's error); one starting with CRASH_TOKEN kills the thread
// with an uncaught error.

export const STEP_FAILURE_TOKEN = 287;
export const CRASH_TOKEN = 286;

const parent = parentPort as MessageEndpoint<ToEngine, FromEngine> | null;
if (parent !== null) {
  const { settings } = workerData as { settings: Partial<EngineConfig> };
  const llm = await LLM.load(settings);
  const toEngine = new EventEmitter();
  const running = new Set<number>();
  const port: MessageEndpoint<ToEngine, FromEngine> = {
    postMessage: (message) => {
      if (message.type === 'updates') for (const update of message.updates) if (update.finished) running.delete(update.id);
      if (message.type === 'failed') running.delete(message.id);
      parent.postMessage(message);
    },
    on: (event, listener) => toEngine.on(event, listener),
    off: (event, listener) => toEngine.off(event, listener),
  };
  parent.on('message', (message) => {
    if (message.type === 'add' && message.tokenIds[0] === STEP_FAILURE_TOKEN) {
      const error = toThreadError(new KeelError('backend', 'injected step failure'));
      for (const id of [...running, message.id]) {
        running.delete(id);
        parent.postMessage({ type: 'failed', id, error });
        toEngine.emit('message', { type: 'abort', id });
      }
      return;
    }
    if (message.type === 'add' && message.tokenIds[0] === CRASH_TOKEN) {
      setImmediate(() => {
        throw new Error('injected crash of the engine thread');
      });
      return;
    }
    if (message.type === 'add') running.add(message.id);
    toEngine.emit('message', message);
  });
  serveEngine(port, llm, () => llm.close());
}
