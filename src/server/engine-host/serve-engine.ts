import type { LLM, StreamUpdate } from '../../engine/llm.ts';
import type { RequestOutput } from '../../engine/outputs.ts';
import type { SamplingParams } from '../../sampling/sampling-params.ts';
import { toThreadError, type ThreadError } from '../thread-errors.ts';
import type { MessageEndpoint } from '../../threads/ts-worker.ts';
import { STATS_INTERVAL_MS, type EngineInfo, type FromEngine, type ToEngine } from './engine-protocol.ts';
import { StepTimelineRecorder } from './step-timeline-recorder.ts';
import { UpdateOutbox } from './update-outbox.ts';

/**
 * What the engine's side of the protocol needs of the engine: the LLM has it, and the chaos soak's
 * synthetic engine (scripts/chaos-soak) stands in for it to load the server without a model.
 */
export interface ServedLLM extends Pick<LLM, 'modelName' | 'modelPath' | 'backendName' | 'maxModelLen' | 'modelConfig' | 'config' | 'samplingDefaults' | 'tokenizer' | 'stats' | 'loraAdapters' | 'loadLoraAdapter' | 'unloadLoraAdapter' | 'startStepTimeline' | 'stopStepTimeline'> {
  stream(tokenIds: number[], params: SamplingParams, options: { signal: AbortSignal; lora?: string }): AsyncIterable<Pick<StreamUpdate, 'deltas' | 'finished'> & { output: Pick<RequestOutput, 'metrics'> }>;
}

export function engineInfo(llm: ServedLLM): EngineInfo {
  return {
    model: llm.modelName,
    modelPath: llm.modelPath,
    backend: llm.backendName,
    maxModelLen: llm.maxModelLen,
    vocabSize: llm.modelConfig.vocabSize,
    blockSize: llm.config.blockSize,
    numKvBlocks: llm.stats().numKvBlocks,
    maxNumSeqs: llm.config.maxNumSeqs,
    maxLoras: llm.config.maxLoras,
    samplingDefaults: llm.samplingDefaults,
    hasTokenizer: llm.tokenizer !== null,
    chatTemplate: llm.tokenizer?.chatTemplateSource ?? null,
    loraAdapters: llm.config.enableLora ? llm.loraAdapters : null,
  };
}

/**
 * The engine's side of the protocol: runs each request the server adds through `llm.stream`, posts
 * its updates in batches (UpdateOutbox) with the stats as they stand, aborts it on request, and
 * reports the engine's stats on a timer; on request it records the step timeline into a file.
 * 'close' aborts what is left and ends the step timeline (its file complete), then `onClose`
 * (which frees the engine, when this side owns it) runs before 'closed' is posted.
 */
export function serveEngine(port: MessageEndpoint<ToEngine, FromEngine>, llm: ServedLLM, onClose: () => Promise<void> = async () => undefined): void {
  const running = new Map<number, AbortController>();
  let timeline: StepTimelineRecorder | null = null;
  const postStats = () => port.postMessage({ type: 'stats', stats: llm.stats() });
  const outbox = new UpdateOutbox((updates) => port.postMessage({ type: 'updates', updates, stats: llm.stats() }));
  // While updates are held, the batch that takes them brings the stats: alone they would run
  // ahead (a request counted as running whose first tokens the server has not seen).
  const statsTimer = setInterval(() => outbox.holding || postStats(), STATS_INTERVAL_MS);

  const run = async (id: number, tokenIds: number[], params: SamplingParams, lora: string | null) => {
    const controller = new AbortController();
    running.set(id, controller);
    try {
      for await (const update of llm.stream(tokenIds, params, { signal: controller.signal, ...(lora === null ? {} : { lora }) })) {
        outbox.add({ id, deltas: update.deltas, finished: update.finished ? update.output.metrics : null });
      }
    } catch (error) {
      outbox.sendNow();
      port.postMessage({ type: 'failed', id, error: toThreadError(error) });
      postStats();
    } finally {
      running.delete(id);
    }
  };

  // The timeline's last steps are read, and its file written, while the engine is still there to read them from.
  const closeAfter = async (recording: StepTimelineRecorder | null) => {
    timeline = null;
    try {
      recording?.stop();
    } finally {
      await onClose();
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
      case 'step-timeline': {
        let error: ThreadError | null = null;
        try {
          const { recording } = message;
          if (recording === null) {
            if (timeline === null) throw new Error('no step timeline is recording');
            const stopping = timeline;
            timeline = null;
            stopping.stop();
          } else {
            if (timeline !== null) throw new Error('a step timeline is recording already');
            timeline = new StepTimelineRecorder(llm, recording.path, recording.fields, recording.append);
          }
        } catch (thrown) {
          error = toThreadError(thrown);
        }
        port.postMessage({ type: 'step-timeline-done', id: message.id, error });
        break;
      }
      case 'abort':
        running.get(message.id)?.abort();
        break;
      case 'ack':
        outbox.acknowledged();
        break;
      case 'close':
        clearInterval(statsTimer);
        for (const controller of running.values()) controller.abort();
        closeAfter(timeline).then(
          () => {
            outbox.sendNow();
            port.postMessage({ type: 'closed', error: null });
          },
          (error: unknown) => {
            outbox.sendNow();
            port.postMessage({ type: 'closed', error: toThreadError(error) });
          },
        );
        break;
    }
  });
  port.postMessage({ type: 'ready', info: engineInfo(llm) });
  postStats();
}
