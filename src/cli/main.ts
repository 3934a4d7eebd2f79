import { KeelError } from '../errors.ts';
import { CHAT_HELP, chatCommand } from './chat.ts';
import { GENERATE_HELP, generateCommand } from './generate.ts';
import { SERVE_HELP, serveCommand } from './serve.ts';

const HELP = `Keel: an LLM inference engine and OpenAI-compatible server.

Usage: keel <command> [options]

Commands:
  generate   generate completions for prompts, all in one batch
  chat       chat with a model through its chat template
  serve      an OpenAI-compatible HTTP server with a web playground
  help CMD   options of a command

Run \`keel <command> --help\` for a command's options.`;

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<void>; help: string }> = {
  generate: { run: generateCommand, help: GENERATE_HELP },
  chat: { run: chatCommand, help: CHAT_HELP },
  serve: { run: serveCommand, help: SERVE_HELP },
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h') {
    console.log(HELP);
    return 0;
  }
  if (name === 'help') {
    console.log(rest[0] && COMMANDS[rest[0]] ? COMMANDS[rest[0]].help : HELP);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`keel: unknown command "${name}"\n\n${HELP}`);
    return 2;
  }
  await command.run(rest);
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  process.exitCode = reportError(error);
}

/** Users see what went wrong and what to change, not a stack trace (KEEL_DEBUG=1 shows it). */
function reportError(error: unknown): number {
  if (process.env.KEEL_DEBUG) console.error(error);
  else if (error instanceof KeelError) console.error(`keel: ${error.message}`);
  else if (error instanceof Error && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS')) {
    console.error(`keel: ${error.message}`);
    return 2;
  } else if (error instanceof Error) console.error(`keel: internal error: ${error.message} (set KEEL_DEBUG=1 for the stack)`);
  else console.error(`keel: ${String(error)}`);
  return 1;
}
