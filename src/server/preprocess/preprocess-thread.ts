import { parentPort, workerData } from 'node:worker_threads';
import { toThreadError } from '../thread-errors.ts';
import type { MessageEndpoint } from '../../threads/ts-worker.ts';
import { ChatPromptEncoder } from './chat-prompt.ts';
import type { PreprocessContext } from './preprocess-context.ts';
import type { FromPreprocess, PreprocessKind, PreprocessSettings, Prepared, ToPreprocess } from './preprocess-protocol.ts';
import { prepareChat } from './prepare-chat.ts';
import { prepareCompletion } from './prepare-completion.ts';
import { prepareResponses } from './prepare-responses.ts';
import { detokenizeAnswer, tokenizeAnswer } from './prepare-tokenize.ts';

// A preprocessing thread: it reads request bodies one at a time (parse, validate, template,
// tokenize), however long one takes, while the server's event loop goes on serving.

const PREPARERS: { [K in PreprocessKind]: (ctx: PreprocessContext, raw: Uint8Array) => Prepared[K] | Promise<Prepared[K]> } = {
  chat: prepareChat,
  completion: prepareCompletion,
  responses: prepareResponses,
  tokenize: tokenizeAnswer,
  detokenize: detokenizeAnswer,
};

const port = parentPort as MessageEndpoint<ToPreprocess, FromPreprocess> | null;
if (port === null) throw new Error('preprocess-thread.ts runs as a worker thread (see preprocess-pool.ts)');
const { settings } = workerData as { settings: PreprocessSettings };
try {
  const chat = settings.tokenizerPath === null ? null : ChatPromptEncoder.load(settings.tokenizerPath, settings.allowSpecialTokens);
  port.on('message', ({ id, kind, body, loraAdapters, continuation }) => {
    const ctx: PreprocessContext = { settings, chat, loraAdapters, continuation };
    // A structured output's grammar is parsed asynchronously (xgrammar's WebAssembly instance starts so).
    Promise.resolve()
      .then(() => PREPARERS[kind](ctx, body))
      .then(
        (result) => port.postMessage({ type: 'done', id, result }),
        (error: unknown) => port.postMessage({ type: 'failed', id, error: toThreadError(error) }),
      );
  });
  port.postMessage({ type: 'ready' });
} catch (error) {
  port.postMessage({ type: 'load-failed', error: toThreadError(error) });
}
