import { parentPort, workerData } from 'node:worker_threads';
import type { EngineOptions } from '../../src/config.ts';
import { LLM } from '../../src/engine/llm.ts';
import type { FromEngine, ToEngine } from '../../src/server/engine-host/engine-protocol.ts';
import { serveEngine } from '../../src/server/engine-host/serve-engine.ts';
import type { MessageEndpoint } from '../../src/threads/ts-worker.ts';
import { SyntheticEngine } from './synthetic-engine.ts';

// The engine thread of `synthetic-serve.ts`: the model is loaded for its facts (tokenizer, context,
// defaults) but never run; SyntheticEngine makes the tokens, at the rate synthetic-serve.ts sets.

export const TOKENS_PER_S_ENV = 'KEEL_SOAK_SYNTHETIC_TOKENS_PER_S';

const port = parentPort as MessageEndpoint<ToEngine, FromEngine> | null;
if (port !== null) {
  const { settings } = workerData as { settings: EngineOptions };
  const llm = await LLM.load(settings);
  const engine = new SyntheticEngine(llm, Number(process.env[TOKENS_PER_S_ENV]));
  serveEngine(port, engine, async () => {
    engine.close();
    await llm.close();
  });
}
