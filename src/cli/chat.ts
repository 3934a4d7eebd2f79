import { createInterface } from 'node:readline/promises';
import { invalidArgument } from '../errors.ts';
import { LLM } from '../engine/llm.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import type { ChatMessage } from '../tokenizer/tokenizer.ts';
import { ENGINE_FLAGS, ENGINE_FLAGS_HELP, engineConfigFromFlags } from './engine-flags.ts';
import { didYouMean, parseFlags } from './parse-flags.ts';
import { requireTokenizer } from './require-tokenizer.ts';
import { SAMPLING_FLAGS, SAMPLING_FLAGS_HELP, samplingParamsFromFlags } from './sampling-flags.ts';

const CHAT_COMMANDS_HELP = `  /help                          these commands
  /reset                         forget the conversation (the system message stays)
  /system TEXT                   set the system message; /system alone removes it
  /exit                          leave (as do Ctrl-D, and Ctrl-C when no reply is streaming)
  Ctrl-C                         stop the reply in progress; the conversation goes on`;

export const CHAT_HELP = `Usage: keel chat [options]

Chats with the model through its chat template, streaming replies to the terminal. A conversation
longer than the model's context drops its oldest turns, with a notice. With --message, answers
that one message and exits. --n must be 1: the chat shows one reply.

In the chat:
${CHAT_COMMANDS_HELP}

  --system TEXT                  a system message
  --message TEXT                 answer one message non-interactively

${SAMPLING_FLAGS_HELP}

${ENGINE_FLAGS_HELP}`;

export async function chatCommand(argv: string[]): Promise<void> {
  const { values } = parseFlags('keel chat', {
    args: argv,
    options: {
      ...ENGINE_FLAGS,
      ...SAMPLING_FLAGS,
      system: { type: 'string' },
      message: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(CHAT_HELP);
    return;
  }
  const params = { maxTokens: 512, ...samplingParamsFromFlags(values) };
  if ((params.n ?? 1) !== 1) throw invalidArgument(`--n must be 1 in keel chat, which shows one reply (got ${params.n}); keel generate --n ${params.n} gives several`);
  const llm = await LLM.load(engineConfigFromFlags(values));
  try {
    requireTokenizer(llm, 'keel chat cannot render or read messages');
    const chat = new Conversation(llm, params, values.system ?? null);
    if (values.message !== undefined) await chat.reply(values.message, new AbortController().signal);
    else await chatLoop(chat);
  } finally {
    await llm.close();
  }
}

/** Reads lines until /exit, Ctrl-D, or Ctrl-C while no reply streams; Ctrl-C during a reply stops it. */
async function chatLoop(chat: Conversation): Promise<void> {
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
  let replying: AbortController | null = null;
  // On a terminal readline reads Ctrl-C as a key and emits SIGINT itself; with piped input the
  // terminal's SIGINT reaches the process.
  const interrupt = () => {
    if (replying) replying.abort();
    else rl.close();
  };
  rl.on('SIGINT', interrupt);
  process.on('SIGINT', interrupt);
  const prompt = () => process.stdout.write('> ');
  try {
    prompt();
    // The async iterator buffers lines typed (or piped) while a reply is still streaming.
    for await (const line of rl) {
      const input = line.trim();
      if (input === '/exit') break;
      if (input.startsWith('/')) console.log(chat.command(input));
      else if (input !== '') {
        replying = new AbortController();
        try {
          await chat.reply(input, replying.signal);
        } finally {
          replying = null;
        }
      }
      prompt();
    }
  } finally {
    process.off('SIGINT', interrupt);
    rl.close();
  }
}

const COMMANDS = ['/help', '/reset', '/system', '/exit'];

/** The messages so far and how a new one is answered. */
class Conversation {
  private system: string | null;
  private turns: ChatMessage[] = [];
  private readonly llm: LLM;
  private readonly params: Partial<SamplingParams> & { maxTokens: number };

  constructor(llm: LLM, params: Partial<SamplingParams> & { maxTokens: number }, system: string | null) {
    this.llm = llm;
    this.params = params;
    this.system = system;
  }

  /** A /command, answered here: the model never sees it. */
  command(input: string): string {
    const name = input.split(/\s+/)[0];
    if (name === '/help') return CHAT_COMMANDS_HELP;
    if (name === '/reset') {
      this.turns = [];
      return '(conversation reset)';
    }
    if (name === '/system') {
      const text = input.slice('/system'.length).trim();
      this.system = text === '' ? null : text;
      return this.system === null ? '(system message removed)' : '(system message set)';
    }
    return `unknown command ${name}${didYouMean(name, COMMANDS)}; /help lists them`;
  }

  /** Streams the reply to `content`; an aborted signal stops it, and what was shown stays in the conversation. */
  async reply(content: string, signal: AbortSignal): Promise<void> {
    this.turns.push({ role: 'user', content });
    const prompt = this.fitToContext();
    if (prompt === null) return;
    let text = '';
    for await (const update of this.llm.stream(prompt, this.params, { signal })) {
      for (const delta of update.deltas) {
        process.stdout.write(delta.text);
        text += delta.text;
      }
    }
    process.stdout.write('\n');
    if (signal.aborted) process.stderr.write('(reply stopped: Ctrl-C again or Ctrl-D leaves)\n');
    this.turns.push({ role: 'assistant', content: text });
  }

  /**
   * The conversation's token ids with room for the reply, dropping the oldest turns (a user
   * message and its reply at a time) while it does not fit the context; null, and the message
   * forgotten, when the newest message alone does not fit.
   */
  private fitToContext(): number[] | null {
    const room = this.llm.maxModelLen;
    let dropped = 0;
    for (;;) {
      const ids = this.llm.encodeChat(this.messages());
      if (ids.length + this.params.maxTokens <= room) {
        if (dropped > 0) process.stderr.write(`(dropped the ${dropped} oldest message${dropped === 1 ? '' : 's'} to fit the context of ${room} tokens)\n`);
        return ids;
      }
      if (this.turns.length === 1) {
        this.turns = [];
        process.stderr.write(
          `keel: this message and a ${this.params.maxTokens}-token reply do not fit the context of ${room} tokens ` +
            `(with it the prompt is ${ids.length} tokens): send a shorter one, or give a smaller --max-tokens\n`,
        );
        return null;
      }
      // The oldest user message and the reply to it.
      const drop = this.turns[1]?.role === 'assistant' ? 2 : 1;
      this.turns.splice(0, drop);
      dropped += drop;
    }
  }

  private messages(): ChatMessage[] {
    return this.system === null ? this.turns : [{ role: 'system', content: this.system }, ...this.turns];
  }
}
