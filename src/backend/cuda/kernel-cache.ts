import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { NvrtcHeader } from './nvrtc.ts';

/** What NVRTC needs to turn a kernel source into a CUBIN. */
export interface KernelCompilerBackend {
  readonly version: { major: number; minor: number };
  compile(name: string, source: string, headers: readonly NvrtcHeader[], options: readonly string[]): Uint8Array;
}

/** `$KEEL_CACHE_DIR/kernels`, else `~/.cache/keel/kernels`. */
export function kernelCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.KEEL_CACHE_DIR || join(homedir(), '.cache', 'keel'), 'kernels');
}

/**
 * The real architecture to compile for: `sm_90a` on compute capability 9.0 (the `a` target unlocks
 * Hopper-only instructions), `sm_XY` elsewhere.
 */
export function archForComputeCapability(major: number, minor: number): string {
  return major === 9 && minor === 0 ? 'sm_90a' : `sm_${major}${minor}`;
}

/** sha256 over everything that changes the CUBIN: sources, headers, arch, options and NVRTC version. */
export function kernelCacheKey(
  source: string,
  headers: readonly NvrtcHeader[],
  arch: string,
  options: readonly string[],
  nvrtcVersion: { major: number; minor: number },
): string {
  const hash = createHash('sha256');
  for (const part of [source, ...headers.flatMap((h) => [h.name, h.source]), arch, ...options, `nvrtc ${nvrtcVersion.major}.${nvrtcVersion.minor}`]) {
    hash.update(part);
    hash.update('\0');
  }
  return hash.digest('hex');
}

/**
 * Compiles kernels with NVRTC for one architecture and keeps each CUBIN on disk under its cache
 * key, so a later process loads it in microseconds instead of compiling for ~100 ms.
 */
export class KernelCompiler {
  private readonly nvrtc: KernelCompilerBackend;
  private readonly arch: string;
  private readonly cacheDir: string;

  constructor(nvrtc: KernelCompilerBackend, arch: string, cacheDir: string) {
    this.nvrtc = nvrtc;
    this.arch = arch;
    this.cacheDir = cacheDir;
  }

  /** `defines` become `-DNAME=value`, so one source yields one CUBIN per specialization. */
  compile(name: string, source: string, headers: readonly NvrtcHeader[], defines: Readonly<Record<string, number>>): Uint8Array {
    const options = [
      `-arch=${this.arch}`,
      '-std=c++17',
      ...Object.entries(defines)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => `-D${k}=${v}`),
    ];
    const key = kernelCacheKey(source, headers, this.arch, options, this.nvrtc.version);
    const path = join(this.cacheDir, `${name.replace(/[^\w.-]/g, '_')}-${key.slice(0, 32)}.cubin`);
    try {
      return readFileSync(path);
    } catch {
      // Not cached yet: compile below.
    }
    const cubin = this.nvrtc.compile(name, source, headers, options);
    try {
      mkdirSync(this.cacheDir, { recursive: true });
      const tmp = `${path}.${process.pid}.tmp`;
      writeFileSync(tmp, cubin);
      renameSync(tmp, path);
    } catch {
      // A read-only or full cache directory only costs the next process a recompile.
    }
    return cubin;
  }
}
