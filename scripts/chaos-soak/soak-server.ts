import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const KEEL = fileURLToPath(new URL('../../bin/keel', import.meta.url));

export interface SoakServer {
  child: ChildProcess;
  url: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  stderr(): string;
}

/** Launches `keel serve` with `args` on a free loopback port; resolves once it prints its URL. */
export async function launchServer(args: string[]): Promise<SoakServer> {
  const child = spawn(process.execPath, [KEEL, 'serve', '--port', '0', '--no-progress', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null, at: performance.now() }));
  let stdout = '';
  let stderr = '';
  child.stderr?.on('data', (chunk) => (stderr = (stderr + chunk).slice(-200_000)));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout?.on('data', (chunk) => {
      stdout += chunk;
      const match = /http:\/\/[\d.]+:\d+/.exec(stdout);
      if (match) resolve(match[0]);
    });
    exited.then(({ code }) => reject(new Error(`keel serve exited (${code}) before listening:\n${stderr}`)));
  });
  return { child, url, exited, stderr: () => stderr };
}

/** The process's resident set in MiB (Linux /proc), or null where that cannot be read. */
export function residentMiB(pid: number): number | null {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : null;
  } catch {
    return null;
  }
}

export interface EngineState {
  running: number;
  waiting: number;
  in_flight_requests: number;
  kv_cache: { total_blocks: number; free_blocks: number };
}

/** Waits (up to `timeoutMs`) until nothing runs, waits or is in flight and every KV block is free; returns the last state seen. */
export async function waitForIdle(url: string, timeoutMs: number): Promise<{ idle: boolean; state: EngineState | null; waitedMs: number }> {
  const start = performance.now();
  let state: EngineState | null = null;
  while (performance.now() - start < timeoutMs) {
    try {
      state = (await (await fetch(`${url}/v1/engine/stats`)).json()) as EngineState;
      if (state.running === 0 && state.waiting === 0 && state.in_flight_requests === 0 && state.kv_cache.free_blocks === state.kv_cache.total_blocks) {
        return { idle: true, state, waitedMs: performance.now() - start };
      }
    } catch {
      // The server is busy answering the last clients; ask again.
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { idle: false, state, waitedMs: performance.now() - start };
}
