import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import koffi, { type LibraryHandle } from 'koffi';
import { KeelError } from '../../errors.ts';

/** The shared libraries the CUDA backend loads (NCCL only for parallel runs: nccl.ts; cuSPARSELt only for 2:4 sparse weights: cusparselt.ts). */
export type CudaLibrary = 'cuda' | 'nvrtc' | 'cublas' | 'cublasLt' | 'nccl' | 'cusparseLt';
/** Those every CUDA run loads. */
export type RequiredCudaLibrary = Exclude<CudaLibrary, 'nccl' | 'cusparseLt'>;

/** Sonames in preference order: CUDA 13 first, CUDA 12 as a fallback (the driver has one). */
export const CUDA_SONAMES: Record<CudaLibrary, readonly string[]> = {
  cuda: ['libcuda.so.1'],
  nvrtc: ['libnvrtc.so.13', 'libnvrtc.so.12'],
  cublas: ['libcublas.so.13', 'libcublas.so.12'],
  cublasLt: ['libcublasLt.so.13', 'libcublasLt.so.12'],
  // pip's nvidia-nccl-cu12/cu13 wheels install it as site-packages/nvidia/nccl/lib/libnccl.so.2.
  nccl: ['libnccl.so.2'],
  // pip's nvidia-cusparselt-cu12/cu13 wheels install it as site-packages/nvidia/cusparselt/lib/libcusparseLt.so.0.
  cusparseLt: ['libcusparseLt.so.0'],
};

/** Where a candidate came from: a file in a toolkit or wheel directory, or the dynamic loader's own search. */
export interface LibraryCandidate {
  /** An absolute path, or a bare soname for the loader to resolve. */
  path: string;
  source: 'CUDA_HOME' | 'toolkit' | 'loader' | 'pip wheel';
}

export interface LoadedLibrary {
  handle: LibraryHandle;
  /** The file actually mapped (resolved through /proc/self/maps for loader hits). */
  path: string;
  source: LibraryCandidate['source'];
}

export interface DiscoveryEnv {
  cudaHome: string | undefined;
  /** site-packages directories to search for pip `nvidia-*` wheels; computed lazily. */
  sitePackages: () => readonly string[];
}

const TOOLKIT_LIB_DIRS = ['lib64', 'targets/x86_64-linux/lib'];

/**
 * Candidate files for one library, in search order: $CUDA_HOME, /usr/local/cuda, the loader path
 * (bare soname: LD_LIBRARY_PATH, ldconfig cache), then pip wheels (`site-packages/nvidia/<pkg>/lib`).
 * Toolkit and wheel candidates are only listed when the file exists.
 */
export function libraryCandidates(library: CudaLibrary, env: DiscoveryEnv): LibraryCandidate[] {
  const sonames = CUDA_SONAMES[library];
  const out: LibraryCandidate[] = [];
  const addFiles = (root: string, source: LibraryCandidate['source']) => {
    for (const dir of TOOLKIT_LIB_DIRS) {
      for (const soname of sonames) {
        const path = join(root, dir, soname);
        if (existsSync(path)) out.push({ path, source });
      }
    }
  };
  if (env.cudaHome) addFiles(env.cudaHome, 'CUDA_HOME');
  if (env.cudaHome !== '/usr/local/cuda') addFiles('/usr/local/cuda', 'toolkit');
  for (const soname of sonames) out.push({ path: soname, source: 'loader' });
  for (const dir of wheelLibraryDirs(env.sitePackages())) {
    for (const soname of sonames) {
      const path = join(dir, soname);
      if (existsSync(path)) out.push({ path, source: 'pip wheel' });
    }
  }
  return out;
}

/** `site-packages/nvidia/*\/lib` directories (cu13/lib, cublas/lib, cuda_nvrtc/lib, ...). */
export function wheelLibraryDirs(sitePackages: readonly string[]): string[] {
  const dirs: string[] = [];
  for (const site of sitePackages) {
    const nvidia = join(site, 'nvidia');
    if (!existsSync(nvidia)) continue;
    for (const entry of readdirSync(nvidia, { withFileTypes: true })) {
      const lib = join(nvidia, entry.name, 'lib');
      if (entry.isDirectory() && existsSync(lib)) dirs.push(lib);
    }
  }
  return dirs;
}

/** The process environment's discovery inputs; asks `python3` for its site-packages only when needed. */
export function processDiscoveryEnv(): DiscoveryEnv {
  let sites: string[] | null = null;
  return {
    cudaHome: process.env.CUDA_HOME || process.env.CUDA_PATH || undefined,
    sitePackages: () => (sites ??= pythonSitePackages()),
  };
}

function pythonSitePackages(): string[] {
  const fromEnv = [process.env.VIRTUAL_ENV, process.env.CONDA_PREFIX]
    .filter((p): p is string => !!p)
    .flatMap((prefix) => {
      const lib = join(prefix, 'lib');
      if (!existsSync(lib)) return [];
      return readdirSync(lib)
        .filter((d) => d.startsWith('python3'))
        .map((d) => join(lib, d, 'site-packages'));
    });
  const probe = spawnSync(
    'python3',
    ['-c', 'import site,sys; print("\\n".join(site.getsitepackages() + [site.getusersitepackages()]))'],
    { encoding: 'utf8', timeout: 5000 },
  );
  const fromPython = probe.status === 0 ? probe.stdout.split('\n').filter((l) => l.length > 0) : [];
  return [...new Set([...fromEnv, ...fromPython])];
}

/**
 * Loads the first candidate that dlopen accepts. Returns the reasons every candidate failed
 * instead of throwing, so availability checks can report them.
 */
export function openLibrary(library: CudaLibrary, env: DiscoveryEnv): LoadedLibrary | { failures: string[] } {
  const failures: string[] = [];
  for (const candidate of libraryCandidates(library, env)) {
    try {
      const handle = koffi.load(candidate.path);
      const path = candidate.source === 'loader' ? (mappedPath(candidate.path) ?? candidate.path) : candidate.path;
      return { handle, path, source: candidate.source };
    } catch (err) {
      failures.push(`${candidate.path}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return { failures };
}

/** The file behind a loaded soname (libcuda.so.1 -> .../libcuda.so.580.95.05), read from the process's memory map. */
function mappedPath(soname: string): string | null {
  const stem = soname.slice(0, soname.indexOf('.so') + 3);
  try {
    for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
      const path = line.slice(line.indexOf('/'));
      if (line.includes('/') && basename(path).startsWith(stem)) return path;
    }
  } catch {
    // No /proc: the soname is the best answer there is.
  }
  return null;
}

/** Library load order: cuBLASLt before cuBLAS, so cuBLAS's dependency resolves to the same file. */
const LOAD_ORDER: readonly RequiredCudaLibrary[] = ['cuda', 'nvrtc', 'cublasLt', 'cublas'];

/** Loads the four libraries every CUDA run needs or throws a KeelError naming the first that no candidate satisfied. */
export function loadCudaLibraries(env: DiscoveryEnv): Record<RequiredCudaLibrary, LoadedLibrary> {
  const loaded: Partial<Record<CudaLibrary, LoadedLibrary>> = {};
  for (const library of LOAD_ORDER) {
    const result = openLibrary(library, env);
    if ('failures' in result) {
      const hint =
        library === 'cuda'
          ? 'the NVIDIA driver is not installed or not on the loader path'
          : 'set CUDA_HOME, or install the CUDA toolkit or the pip nvidia-* wheels';
      throw new KeelError('backend', `${CUDA_SONAMES[library].join(' or ')} not found (${hint}); tried ${result.failures.join('; ')}`);
    }
    loaded[library] = result;
  }
  return loaded as Record<RequiredCudaLibrary, LoadedLibrary>;
}
