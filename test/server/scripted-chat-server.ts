import OpenAI from 'openai';
import type { ServerOptions } from '../../src/server/server.ts';
import { hermesChatModelDir } from './hermes-chat-model.ts';
import { startTinyServer, type TinyServer } from './tiny-server.ts';

export interface ScriptedChatServer {
  server: TinyServer;
  client: OpenAI;
  /** Stops the server and removes the model. */
  close(): Promise<void>;
}

/**
 * keel serve over the tiny random model with the Hermes-style chat template, its engine thread the
 * scripted one (scripted-engine-thread.ts: a reply is what the test scripts), and the official
 * SDK's client for it.
 */
export async function startScriptedChatServer(options: Partial<Omit<ServerOptions, 'engine'>>): Promise<ScriptedChatServer> {
  const model = hermesChatModelDir();
  try {
    const server = await startTinyServer({ modelDir: model.dir, engineEntry: new URL('./scripted-engine-thread.ts', import.meta.url), server: options });
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'not-checked', maxRetries: 0 });
    return {
      server,
      client,
      close: async () => {
        await server.close();
        model.remove();
      },
    };
  } catch (error) {
    model.remove();
    throw error;
  }
}
