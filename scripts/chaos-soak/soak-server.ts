import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const KEEL = fileURLToPath(new URL('../../bin/keel', import.meta.url));
const SYNTHETIC_SERVE = fileURLToPath(new URL('./synthetic-serve.ts', import.meta.url));
const LOOP_DELAY_MONITOR = new URL('./loop-delay-monitor.mjs', import.meta.url).href;

/** The server's main-thread event-loop delay, measured inside it (loop-delay-monitor.mjs). */
export interface LoopDelay {
  samples: number;
  p50_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
  /** The share of the wall time the main thread spent on a CPU (null where /proc cannot tell). */
  main_thread_busy: number | null;
}

export interface SoakServer {
  child: ChildProcess;
  url: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  stderr(): string;
  /** The event-loop delay since the last call that reset it (or since the start); null once the server is gone. */
  loopDelay(reset: boolean): Promise<LoopDelay | null>;
}

export interface LaunchOptions {
  /** Serve with the synthetic engine at this many tokens a second instead of the model (synthetic-engine.ts). */
  syntheticTokensPerS: number | null;
  /** Write CPU profiles of the server (node --cpu-prof) into this directory when it exits. */
  cpuProfDir: string | null;
}

/** Launches `keel serve` with `args` on a free loopback port; resolves once it prints its URL. */
export async function launchServer(args: string[], options: LaunchOptions): Promise<SoakServer> {
  const nodeFlags = ['--import', LOOP_DELAY_MONITOR, ...(options.cpuProfDir === null ? [] : ['--cpu-prof', '--cpu-prof-dir', options.cpuProfDir])];
  const command =
    options.syntheticTokensPerS === null
      ? [KEEL, 'serve']
      : // bin/keel loads TypeScript by itself; the synthetic server's script needs the loader where Node lacks type stripping.
        [...((process.features as { typescript?: unknown }).typescript ? [] : ['--import', 'tsx']), SYNTHETIC_SERVE, String(options.syntheticTokensPerS)];
  const child = spawn(process.execPath, [...nodeFlags, ...command, '--port', '0', '--no-progress', ...args], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
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
  const loopDelay = (reset: boolean) =>
    new Promise<LoopDelay | null>((resolve) => {
      if (!child.connected) return resolve(null);
      const answer = (message: { type?: string } & LoopDelay) => {
        if (message?.type !== 'loop-delay') return;
        child.off('message', answer);
        child.off('disconnect', gone);
        const { type: _type, ...figures } = message;
        resolve(figures);
      };
      const gone = () => {
        child.off('message', answer);
        resolve(null);
      };
      child.on('message', answer);
      child.once('disconnect', gone);
      child.send({ type: 'loop-delay', reset });
    });
  return { child, url, exited, stderr: () => stderr, loopDelay };
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
