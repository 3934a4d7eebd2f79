import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * A child process running the module at `entry` (a file URL, TypeScript or JavaScript), with an
 * IPC channel that carries structured clones (typed arrays, bigints), as worker threads' messages
 * do. A TypeScript module runs with Node's own type stripping where it has it (22.18+) and tsx's
 * loader otherwise, as in ts-worker-boot.mjs. `env` is added to the parent's environment.
 */
export function startTsProcess(entry: URL, name: string, env: Record<string, string> = {}): ChildProcess {
  // Node's typings (20.x) do not list the typescript feature yet.
  const stripsTypes = Boolean((process.features as { typescript?: unknown }).typescript);
  const loader = entry.pathname.endsWith('.ts') && !stripsTypes ? ['--import', import.meta.resolve('tsx')] : [];
  return fork(fileURLToPath(entry), [name], { execArgv: loader, serialization: 'advanced', env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}
