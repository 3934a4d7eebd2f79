import { readFileSync } from 'node:fs';
import { KeelError } from '../errors.ts';
import { ENGINE_FIELD_OF_FLAG } from './engine-flags.ts';
import { didYouMean } from './parse-flags.ts';
import { SAMPLING_FIELD_OF_FLAG } from './sampling-flags.ts';

const HELP = `Keel: an LLM inference engine and OpenAI-compatible server.

Usage: keel <command> [options]

Commands:
  generate   generate completions for prompts, all in one batch
  chat       chat with a model through its chat template
  serve      an OpenAI-compatible HTTP server with a web playground
  bench      benchmarks: latency, throughput, serve (vLLM's methodology), plot
  perplexity perplexity of a text file under the model (sliding windows)
  quantize   quantize a 16-bit checkpoint with GPTQ, AWQ or round to nearest
  prune      prune a 16-bit checkpoint to 2:4 sparsity (magnitude or Wanda)
  doctor     what Keel can run on: GPU, driver, CUDA libraries, chosen backend
  help CMD   options of a command

  --version  Keel's version

Run \`keel <command> --help\` for a command's options.`;

interface Command {
  /** Resolves with the process's exit code when the command has one other than 0. */
  run: (argv: string[]) => Promise<number | void>;
  help: string;
}

// Loaded on demand: `keel generate` need not load the HTTP server's packages, nor `serve` the CUDA bindings.
const COMMANDS: Record<string, () => Promise<Command>> = {
  generate: async () => {
    const m = await import('./generate.ts');
    return { run: m.generateCommand, help: m.GENERATE_HELP };
  },
  chat: async () => {
    const m = await import('./chat.ts');
    return { run: m.chatCommand, help: m.CHAT_HELP };
  },
  serve: async () => {
    const m = await import('./serve.ts');
    return { run: m.serveCommand, help: m.SERVE_HELP };
  },
  bench: async () => {
    const m = await import('./bench.ts');
    return { run: m.benchCommand, help: m.BENCH_HELP };
  },
  perplexity: async () => {
    const m = await import('./perplexity.ts');
    return { run: m.perplexityCommand, help: m.PERPLEXITY_HELP };
  },
  quantize: async () => {
    const m = await import('./quantize.ts');
    return { run: m.quantizeCommand, help: m.QUANTIZE_HELP };
  },
  prune: async () => {
    const m = await import('./prune.ts');
    return { run: m.pruneCommand, help: m.PRUNE_HELP };
  },
  doctor: async () => {
    const m = await import('./doctor.ts');
    return { run: m.doctorCommand, help: m.DOCTOR_HELP };
  },
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h') {
    console.log(HELP);
    return 0;
  }
  if (name === '--version' || name === '-v') {
    console.log(packageVersion());
    return 0;
  }
  if (name === 'help') {
    const topic = rest[0] === undefined ? undefined : COMMANDS[rest[0]];
    console.log(topic ? (await topic()).help : HELP);
    return 0;
  }
  const load = COMMANDS[name];
  if (!load) {
    console.error(`keel: unknown command "${name}"${didYouMean(name, Object.keys(COMMANDS))}\n\n${HELP}`);
    return 2;
  }
  return (await (await load()).run(rest)) ?? 0;
}

/** package.json sits two folders up from both src/cli/ (a checkout) and dist/cli/ (the package). */
function packageVersion(): string {
  return JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;
}

/** Users see what went wrong and what to change, not a stack trace (KEEL_DEBUG=1 shows it). */
function reportError(error: unknown): number {
  if (process.env.KEEL_DEBUG) console.error(error);
  else if (error instanceof KeelError) console.error(`keel: ${inFlagNames(error.message)}`);
  else if (error instanceof Error && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS')) {
    console.error(`keel: ${error.message}`);
    return 2;
  } else if (error instanceof Error) console.error(`keel: internal error: ${error.message} (set KEEL_DEBUG=1 for the stack)`);
  else console.error(`keel: ${String(error)}`);
  return 1;
}

/** Engine and sampling errors name the field of the library's options ("topP ..."); the CLI's user typed its flag. */
const FLAG_OF_FIELD = new Map(Object.entries({ ...ENGINE_FIELD_OF_FLAG, ...SAMPLING_FIELD_OF_FLAG }).map(([flag, field]) => [field as string, `--${flag}`]));

function inFlagNames(message: string): string {
  const field = /^[\w.]+/.exec(message)?.[0];
  const flag = field === undefined ? undefined : FLAG_OF_FIELD.get(field);
  return flag === undefined ? message : flag + message.slice(field!.length);
}

// `keel generate | head` closes the pipe while Keel still writes: the reader has all it wanted.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  process.exitCode = reportError(error);
}
