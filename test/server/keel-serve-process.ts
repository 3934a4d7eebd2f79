import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { TEST_BACKEND } from './test-backend.ts';

const KEEL = fileURLToPath(new URL('../../bin/keel', import.meta.url));

export interface ServeProcess {
  child: ChildProcess;
  url: string;
  /** Resolves when the process has exited, with its code (null when a signal ended it) and that signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Everything the process wrote to stderr so far. */
  stderr(): string;
}

/**
 * `keel serve` as a child process on a free loopback port, over `modelDir` on TEST_BACKEND;
 * resolves once it prints its URL. The caller kills it (the test's `after` should, in case an
 * assertion failed first). `processGroup`: it leads a process group of its own, which its
 * replicas' processes join, as a terminal's foreground job (`process.kill(-pid, 'SIGINT')` is Ctrl-C).
 */
export async function spawnServe(modelDir: string, extraArgs: string[], options: { processGroup?: boolean } = {}): Promise<ServeProcess> {
  const child = spawn(process.execPath, [KEEL, 'serve', '--model', modelDir, '--backend', TEST_BACKEND, '--port', '0', '--no-progress', '--log-level', 'warn', ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: options.processGroup === true,
  });
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  let stdout = '';
  let stderr = '';
  child.stderr?.on('data', (chunk) => (stderr += chunk));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (chunk) => {
      stdout += chunk;
      const match = /http:\/\/[\d.]+:\d+/.exec(stdout);
      if (match) resolve(match[0]);
    });
    exited.then(({ code }) => reject(new Error(`keel serve exited (${code}) before listening: ${stderr}`)));
  });
  return { child, url, exited, stderr: () => stderr };
}

/** Resolves with the exit, or with null if the process is still running after `ms`. */
export async function exitWithin(server: ServeProcess, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), ms)));
  const result = await Promise.race([server.exited, timeout]);
  clearTimeout(timer);
  return result;
}
