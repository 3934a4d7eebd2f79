import { KeelError } from '../errors.ts';
import type { Backend } from './backend.ts';
import { CpuBackend } from './cpu/cpu-backend.ts';

/** Which backend to run on: `auto` picks CUDA when a GPU and its libraries are found, else the CPU. */
export type BackendChoice = 'auto' | 'cpu' | 'cuda';

/**
 * `cpu` and `cuda` are taken at their word (cuda fails with the reason when no GPU is usable);
 * `auto` prefers CUDA and says on stderr why it fell back to the CPU backend.
 */
export async function selectBackend(choice: BackendChoice): Promise<Backend> {
  if (choice === 'cpu') return new CpuBackend();
  const cuda = await import('./cuda/availability.ts');
  const availability = cuda.cudaAvailability();
  if (availability.ok) {
    const { CudaBackend } = await import('./cuda/cuda-backend.ts');
    return new CudaBackend();
  }
  if (choice === 'cuda') throw new KeelError('backend', `the CUDA backend is unavailable: ${availability.reason}`);
  process.stderr.write(`keel: no usable CUDA GPU (${availability.reason}); running on the CPU backend\n`);
  return new CpuBackend();
}
