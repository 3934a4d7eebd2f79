import { createInterface } from 'node:readline/promises';
import { parseArgs } from 'node:util';
import { LLM } from '../engine/llm.ts';
import type { ChatMessage } from '../tokenizer/tokenizer.ts';
import { ENGINE_FLAGS, ENGINE_FLAGS_HELP, engineConfigFromFlags } from './engine-flags.ts';
import { SAMPLING_FLAGS, SAMPLING_FLAGS_HELP, samplingParamsFromFlags } from './sampling-flags.ts';

export const CHAT_HELP = `Usage: keel chat [options]

Chats with the model through its chat template, streaming replies to the terminal. Type /reset to
start over and /exit (or Ctrl-D) to leave. With --message, answers that one message and exits.

  --system TEXT                  a system message
  --message TEXT                 answer one message non-interactively

${SAMPLING_FLAGS_HELP}

${ENGINE_FLAGS_HELP}`;

export async function chatCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...ENGINE_FLAGS,
      ...SAMPLING_FLAGS,
      system: { type: 'string' },
      message: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(CHAT_HELP);
    return;
  }
  const params = { maxTokens: 512, ...samplingParamsFromFlags(values) };
  const llm = await LLM.load(engineConfigFromFlags(values));
  const history: ChatMessage[] = values.system ? [{ role: 'system', content: values.system }] : [];

  const reply = async (content: string): Promise<void> => {
    history.push({ role: 'user', content });
    let text = '';
    for await (const update of llm.stream(llm.encodeChat(history), params)) {
      for (const delta of update.deltas) {
        process.stdout.write(delta.text);
        text += delta.text;
      }
    }
    process.stdout.write('\n');
    history.push({ role: 'assistant', content: text });
  };

  try {
    if (values.message !== undefined) {
      await reply(values.message);
      return;
    }
    const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
    const prompt = () => process.stdout.write('> ');
    try {
      prompt();
      // The async iterator buffers lines typed (or piped) while a reply is still streaming.
      for await (const line of rl) {
        const input = line.trim();
        if (input === '/exit') break;
        if (input === '/reset') history.splice(values.system ? 1 : 0);
        else if (input !== '') await reply(input);
        prompt();
      }
    } finally {
      rl.close();
    }
  } finally {
    await llm.close();
  }
}
