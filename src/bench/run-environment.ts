import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RESULT_SCHEMA_VERSION, type BenchResult, type Device } from './result-schema.ts';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Where and when a benchmark ran, from which source: the part of a result that is not a figure. */
export type RunEnvironment = Pick<BenchResult, 'date' | 'git_commit' | 'git_dirty' | 'software' | 'device'>;

export function collectEnvironment(device: Pick<Device, 'backend' | 'name' | 'cuda_version'>): RunEnvironment {
  return {
    date: new Date().toISOString(),
    ...sourceRevision(),
    software: { node: process.version },
    device: { ...device, driver: nvidiaDriverVersion(), cpu: cpus()[0]?.model.trim() ?? 'unknown', cpu_count: cpus().length },
  };
}

/**
 * The commit the run's source came from. A copy of the tree made elsewhere (the GPU host gets one)
 * may carry no repository, or a stale one: KEEL_GIT_COMMIT and KEEL_GIT_DIRTY, set by whoever made
 * the copy (scripts/pack-gpu.sh records them), then take precedence.
 */
function sourceRevision(): Pick<RunEnvironment, 'git_commit' | 'git_dirty'> {
  const recorded = process.env.KEEL_GIT_COMMIT;
  if (recorded) return { git_commit: recorded, git_dirty: process.env.KEEL_GIT_DIRTY === undefined ? null : process.env.KEEL_GIT_DIRTY === '1' };
  const head = git(['rev-parse', 'HEAD']);
  const changes = git(['status', '--porcelain', '--untracked-files=no']);
  return { git_commit: head, git_dirty: head === null || changes === null ? null : changes !== '' };
}

/**
 * A git query in Keel's own checkout; null where there is no git or no repository (an unpacked
 * copy, the installed package: git would answer for whatever repository holds node_modules).
 */
function git(args: string[]): string | null {
  if (!existsSync(join(REPO_ROOT, '.git'))) return null;
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

/**
 * The envelope of a result with no model of its own (`keel bench attention`, `keel bench linear`,
 * `keel quantize --result`): Keel, the driver's CUDA version (as cuDriverGetVersion gives it, e.g.
 * 12080; null on the CPU).
 */
export function modelFreeRun(started: RunEnvironment, driverCudaVersion: number | null): Omit<BenchResult, 'suite' | 'results' | 'config'> {
  const v = driverCudaVersion;
  return {
    schema_version: RESULT_SCHEMA_VERSION,
    engine: 'keel',
    status: 'ok',
    error: null,
    ...started,
    device: { ...started.device, cuda_version: v === null ? null : `${Math.floor(v / 1000)}.${(v % 1000) / 10}` },
    model: null,
  };
}
