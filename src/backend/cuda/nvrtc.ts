import type { LibraryHandle } from 'koffi';
import { cudaCallError } from './cuda-error.ts';
import type { Handle, NativeFn } from './driver-api.ts';

/** A header handed to NVRTC by name, so kernels can `#include "name"` without a file system. */
export interface NvrtcHeader {
  name: string;
  source: string;
}

const NVRTC_ERROR_COMPILATION = 6;

/** NVRTC (libnvrtc.so.13 / .12): compiles CUDA C++ to a CUBIN for one real architecture. */
export class Nvrtc {
  private readonly fns: Record<string, NativeFn> = {};
  private readonly errorString: NativeFn;
  readonly version: { major: number; minor: number };

  constructor(lib: LibraryHandle) {
    this.errorString = lib.func('const char *nvrtcGetErrorString(int result)');
    for (const proto of [
      'int nvrtcVersion(_Out_ int *major, _Out_ int *minor)',
      'int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, const char **headers, const char **includeNames)',
      'int nvrtcCompileProgram(void *prog, int numOptions, const char **options)',
      'int nvrtcGetCUBINSize(void *prog, _Out_ size_t *size)',
      'int nvrtcGetCUBIN(void *prog, _Out_ uint8_t *cubin)',
      'int nvrtcGetProgramLogSize(void *prog, _Out_ size_t *size)',
      'int nvrtcGetProgramLog(void *prog, _Out_ uint8_t *log)',
      'int nvrtcDestroyProgram(_Inout_ void **prog)',
    ]) {
      this.fns[/\b(nvrtc\w+)\(/.exec(proto)![1]] = lib.func(proto);
    }
    const major: unknown[] = [0];
    const minor: unknown[] = [0];
    this.call('nvrtcVersion', major, minor);
    this.version = { major: major[0] as number, minor: minor[0] as number };
  }

  private call(name: string, ...args: unknown[]): void {
    const code = this.fns[name](...args) as number;
    if (code !== 0) throw cudaCallError(name, code, (this.errorString(code) as string | null) ?? `nvrtcResult ${code}`);
  }

  /**
   * Compiles `source` with `options` (which must name a real `-arch=sm_XX`) and returns the CUBIN.
   * A compile error throws with NVRTC's log in the message.
   */
  compile(name: string, source: string, headers: readonly NvrtcHeader[], options: readonly string[]): Uint8Array {
    const box: unknown[] = [null];
    this.call(
      'nvrtcCreateProgram',
      box,
      source,
      name,
      headers.length,
      headers.length > 0 ? headers.map((h) => h.source) : null,
      headers.length > 0 ? headers.map((h) => h.name) : null,
    );
    const program = box[0] as Handle;
    try {
      const code = this.fns.nvrtcCompileProgram(program, options.length, [...options]) as number;
      if (code !== 0) {
        const codeName = (this.errorString(code) as string | null) ?? `nvrtcResult ${code}`;
        const log = code === NVRTC_ERROR_COMPILATION ? this.log(program) : '';
        throw cudaCallError('nvrtcCompileProgram', code, codeName, `${name} ${options.join(' ')}\n${log}`);
      }
      const size: unknown[] = [0];
      this.call('nvrtcGetCUBINSize', program, size);
      const cubin = new Uint8Array(Number(size[0]));
      this.call('nvrtcGetCUBIN', program, cubin);
      return cubin;
    } finally {
      this.call('nvrtcDestroyProgram', [program]);
    }
  }

  private log(program: Handle): string {
    const size: unknown[] = [0];
    this.call('nvrtcGetProgramLogSize', program, size);
    const log = Buffer.alloc(Number(size[0]));
    this.call('nvrtcGetProgramLog', program, log);
    return log.toString('utf8').replace(/\0+$/, '');
  }
}
