import { KeelError } from '../errors.ts';
import { HostQuantizeDevice } from './host-quantize-device.ts';
import type { QuantizeDevice } from './quantize-device.ts';

/** Where `keel quantize --backend` runs: `auto` takes the GPU when one is usable. */
export type QuantizeDeviceChoice = 'auto' | 'cpu' | 'cuda';

/** The device `choice` names; `auto` says on stderr why it fell back to the CPU. The CUDA modules load only when a GPU is usable. */
export async function selectQuantizeDevice(choice: QuantizeDeviceChoice): Promise<QuantizeDevice> {
  if (choice === 'cpu') return new HostQuantizeDevice();
  const { cudaAvailability } = await import('../backend/cuda/availability.ts');
  const availability = cudaAvailability();
  if (availability.ok) {
    const { CudaQuantizeDevice } = await import('./cuda-quantize-device.ts');
    return new CudaQuantizeDevice();
  }
  if (choice === 'cuda') throw new KeelError('backend', `the CUDA backend is unavailable: ${availability.reason}`);
  process.stderr.write(`keel: no usable CUDA GPU (${availability.reason}); quantizing on the CPU\n`);
  return new HostQuantizeDevice();
}
