import type { EngineOptions } from '../../config.ts';
import { LLM } from '../../engine/llm.ts';
import type { MessageEndpoint } from '../../threads/ts-worker.ts';
import { toThreadError } from '../thread-errors.ts';
import type { FromEngine, ToEngine } from './engine-protocol.ts';
import { serveEngine } from './serve-engine.ts';

/**
 * Loads the engine and serves it over `port`, or tells the other side why it could not load.
 * `onBroken`, if given, hears when the engine can never step again: a rank of its parallel run died.
 */
export async function loadAndServe(port: MessageEndpoint<ToEngine, FromEngine>, settings: EngineOptions, onBroken?: (error: Error) => void): Promise<void> {
  try {
    const llm = await LLM.load(settings);
    if (onBroken !== undefined) llm.parallelRanks?.onFailure(onBroken);
    serveEngine(port, llm, () => llm.close());
  } catch (error) {
    port.postMessage({ type: 'load-failed', error: toThreadError(error) });
  }
}
