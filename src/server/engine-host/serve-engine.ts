import type { LLM } from '../../engine/llm.ts';
import type { SamplingParams } from '../../sampling/sampling-params.ts';
import { toThreadError, type ThreadError } from '../thread-errors.ts';
import type { MessageEndpoint } from '../ts-worker.ts';
import { STATS_INTERVAL_MS, type EngineInfo, type FromEngine, type ToEngine } from './engine-protocol.ts';

export function engineInfo(llm: LLM): EngineInfo {
  return {
    model: llm.modelName,
    modelPath: llm.modelPath,
    backend: llm.backendName,
    maxModelLen: llm.maxModelLen,
    vocabSize: llm.modelConfig.vocabSize,
    blockSize: llm.config.blockSize,
    numKvBlocks: llm.stats().numKvBlocks,
    samplingDefaults: llm.samplingDefaults,
    hasTokenizer: llm.tokenizer !== null,
    chatTemplate: llm.tokenizer?.chatTemplateSource ?? null,
    loraAdapters: llm.config.enableLora ? llm.loraAdapters : null,
  };
}

/**
 * The engine's side of the protocol: runs each request the server adds through `llm.stream`, posts
 * its updates as they come, aborts it on request, and reports the engine's stats on a timer and
 * as each request starts and ends.
 * 'close' aborts what is left, then `onClose` (which frees the engine, when this side owns it)
 * runs before 'closed' is posted.
 */
export function serveEngine(port: MessageEndpoint<ToEngine, FromEngine>, llm: LLM, onClose: () => Promise<void> = async () => undefined): void {
  const running = new Map<number, AbortController>();
  const postStats = () => port.postMessage({ type: 'stats', stats: llm.stats() });
  const statsTimer = setInterval(postStats, STATS_INTERVAL_MS);

  const run = async (id: number, tokenIds: number[], params: SamplingParams, lora: string | null) => {
    const controller = new AbortController();
    running.set(id, controller);
    let first = true;
    try {
      for await (const update of llm.stream(tokenIds, params, { signal: controller.signal, ...(lora === null ? {} : { lora }) })) {
        port.postMessage({ type: 'update', id, deltas: update.deltas, finished: update.finished ? update.output.metrics : null });
        // Fresh stats as a request starts and ends: whoever sees it end (its client, a test waiting
        // for the pool to be free) then sees the KV blocks it held back in the pool.
        if (first || update.finished) postStats();
        first = false;
      }
    } catch (error) {
      port.postMessage({ type: 'failed', id, error: toThreadError(error) });
      postStats();
    } finally {
      running.delete(id);
    }
  };

  port.on('message', (message) => {
    switch (message.type) {
      case 'add':
        void run(message.id, message.tokenIds, message.params, message.lora);
        break;
      case 'load-lora':
      case 'unload-lora': {
        let error: ThreadError | null = null;
        try {
          if (message.type === 'load-lora') llm.loadLoraAdapter(message.name, message.path);
          else llm.unloadLoraAdapter(message.name);
        } catch (thrown) {
          error = toThreadError(thrown);
        }
        port.postMessage({ type: 'lora-done', id: message.id, error, adapters: llm.loraAdapters });
        break;
      }
      case 'abort':
        running.get(message.id)?.abort();
        break;
      case 'close':
        clearInterval(statsTimer);
        for (const controller of running.values()) controller.abort();
        onClose().then(
          () => port.postMessage({ type: 'closed', error: null }),
          (error: unknown) => port.postMessage({ type: 'closed', error: toThreadError(error) }),
        );
        break;
    }
  });
  port.postMessage({ type: 'ready', info: engineInfo(llm) });
  postStats();
}
