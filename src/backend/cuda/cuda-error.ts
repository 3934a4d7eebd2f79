import { KeelError } from '../../errors.ts';

/**
 * A failed CUDA driver, NVRTC or cuBLAS call. The message names the call (version suffixes such
 * as `_v2` dropped) and the library's name for the status code, e.g.
 * `cuMemAlloc failed with CUDA_ERROR_OUT_OF_MEMORY (2)`.
 */
export function cudaCallError(symbol: string, code: number, codeName: string, detail?: string): KeelError {
  const call = symbol.replace(/_v\d+$/, '');
  return new KeelError('backend', `${call} failed with ${codeName} (${code})${detail ? `: ${detail}` : ''}`);
}
