import { EventEmitter } from 'node:events';
import { parentPort, workerData } from 'node:worker_threads';
import type { EngineConfig } from '../../src/config.ts';
import type { StreamDelta } from '../../src/engine/outputs.ts';
import { LLM } from '../../src/engine/llm.ts';
import type { FromEngine, ToEngine } from '../../src/server/engine-host/engine-protocol.ts';
import { serveEngine } from '../../src/server/engine-host/serve-engine.ts';
import type { MessageEndpoint } from '../../src/threads/ts-worker.ts';
import { IncrementalDetokenizer } from '../../src/tokenizer/detokenizer.ts';

// The engine thread with the model's words replaced by a script, for tests of what a server does
// with outputs a tiny random model would never write (tool calls, harmony channels). A prompt
// holding [[script:BASE64]] is run by the engine as usual (scheduling, KV blocks, prefix cache,
// max_tokens), but the tokens it samples are swapped for those of the script's text, and it stops
// where the script ends as if the model had sampled EOS. [[echo]] scripts the prompt's own text,
// so a test can see what the chat template rendered. The last marker in the prompt counts.

const MARKER = /\[\[(?:script:([A-Za-z0-9+/=]*)|echo)\]\]/g;

/** The marker a test puts in a message for the reply `text`. */
export function scriptMarker(text: string): string {
  return `[[script:${Buffer.from(text).toString('base64')}]]`;
}

export const ECHO_MARKER = '[[echo]]';

const parent = parentPort as MessageEndpoint<ToEngine, FromEngine> | null;
if (parent !== null) {
  const { settings } = workerData as { settings: Partial<EngineConfig> };
  const llm = await LLM.load(settings);
  const tokenizer = llm.tokenizer;
  if (tokenizer === null) throw new Error('the scripted engine needs a model with a tokenizer');
  const toEngine = new EventEmitter();
  const scripts = new Map<number, { tokenIds: number[]; shown: number[]; detokenizers: IncrementalDetokenizer[] }>();

  const rewrite = (id: number, deltas: StreamDelta[]): StreamDelta[] => {
    const script = scripts.get(id);
    if (!script) return deltas;
    return deltas.map((d) => {
      const from = script.shown[d.index];
      const tokenIds = script.tokenIds.slice(from, from + d.tokenIds.length);
      script.shown[d.index] += tokenIds.length;
      const detokenizer = script.detokenizers[d.index];
      let text = tokenIds.map((t) => detokenizer.push(t)).join('');
      if (d.finishReason !== null) text += detokenizer.flush();
      // The script's end is the model's EOS: a stop, not a length cut.
      const ended = script.shown[d.index] === script.tokenIds.length && d.finishReason === 'length';
      return { ...d, tokenIds, text, finishReason: ended ? 'stop' : d.finishReason };
    });
  };

  const port: MessageEndpoint<ToEngine, FromEngine> = {
    postMessage: (message) => {
      if (message.type === 'updates') {
        const updates = message.updates.map((update) => {
          const deltas = rewrite(update.id, update.deltas);
          if (update.finished) scripts.delete(update.id);
          return { ...update, deltas };
        });
        parent.postMessage({ ...message, updates });
        return;
      }
      if (message.type === 'failed') scripts.delete(message.id);
      parent.postMessage(message);
    },
    on: (event, listener) => toEngine.on(event, listener),
    off: (event, listener) => toEngine.off(event, listener),
  };

  parent.on('message', (message) => {
    if (message.type !== 'add') {
      toEngine.emit('message', message);
      return;
    }
    const prompt = tokenizer.decode(message.tokenIds, { skipSpecialTokens: false });
    const last = [...prompt.matchAll(MARKER)].at(-1);
    if (last === undefined) {
      toEngine.emit('message', message);
      return;
    }
    const text = last[1] === undefined ? prompt : Buffer.from(last[1], 'base64').toString('utf8');
    const tokenIds = tokenizer.encode(text, { addSpecialTokens: false });
    const detokenizers = Array.from({ length: message.params.n }, () => new IncrementalDetokenizer(tokenizer, message.tokenIds, { skipSpecialTokens: message.params.skipSpecialTokens }));
    scripts.set(message.id, { tokenIds, shown: new Array<number>(message.params.n).fill(0), detokenizers });
    const params = { ...message.params, maxTokens: Math.min(message.params.maxTokens, tokenIds.length), minTokens: 0, ignoreEos: true, stop: [], stopTokenIds: [] };
    toEngine.emit('message', { ...message, params });
  });
  serveEngine(port, llm, () => llm.close());
}
