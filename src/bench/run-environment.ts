import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { BenchResult, Device } from './result-schema.ts';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Where and when a benchmark ran, from which source: the part of a result that is not a figure. */
export type RunEnvironment = Pick<BenchResult, 'date' | 'git_commit' | 'git_dirty' | 'software' | 'device'>;

export function collectEnvironment(device: Pick<Device, 'backend' | 'name' | 'cuda_version'>): RunEnvironment {
  const head = git(['rev-parse', 'HEAD']);
  const changes = git(['status', '--porcelain', '--untracked-files=no']);
  return {
    date: new Date().toISOString(),
    git_commit: head,
    git_dirty: head === null || changes === null ? null : changes !== '',
    software: { node: process.version },
    device: { ...device, driver: nvidiaDriverVersion(), cpu: cpus()[0]?.model.trim() ?? 'unknown', cpu_count: cpus().length },
  };
}

/** A git query in Keel's own checkout; null where there is no git or no repository (an unpacked copy). */
function git(args: string[]): string | null {
  try {
    return execFileSync('git', args, { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

/** The NVIDIA kernel module's version (e.g. 580.65.06) from /proc, on Linux hosts that have one. */
function nvidiaDriverVersion(): string | null {
  try {
    return /Kernel Module\s+(?:for \S+\s+)?([\d.]+)/.exec(readFileSync('/proc/driver/nvidia/version', 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
}
