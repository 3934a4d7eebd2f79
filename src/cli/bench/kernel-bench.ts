import { KeelError } from '../../errors.ts';
import { writeResult } from '../../bench/result-file.ts';
import type { BenchResult } from '../../bench/result-schema.ts';
import { collectEnvironment, modelFreeRun } from '../../bench/run-environment.ts';
import { parseFlags } from '../parse-flags.ts';

/** What a kernel suite records: its name, settings and figures. */
type KernelRecord = Pick<Extract<BenchResult, { suite: 'attention' | 'lora' }>, 'suite' | 'config' | 'results'>;

/**
 * The frame of the kernel suites (`keel bench attention`, `keel bench lora`): --output and --help,
 * the CUDA check, then `measure` on the GPU, its result file (`record`) and its console lines
 * (`report`, given the file's path).
 */
export async function kernelBench<F extends { driverCudaVersion: number }>(
  name: string,
  argv: string[],
  help: string,
  measure: () => Promise<F>,
  record: (figures: F) => KernelRecord,
  report: (figures: F, path: string) => void,
): Promise<void> {
  const { values } = parseFlags(`keel bench ${name}`, { args: argv, options: { output: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    console.log(help);
    return;
  }
  const { cudaAvailability } = await import('../../backend/cuda/availability.ts');
  const available = cudaAvailability();
  if (!available.ok) throw new KeelError('unavailable', `keel bench ${name} needs the CUDA backend: ${available.reason}`);
  const started = collectEnvironment({ backend: 'cuda', name: available.deviceName, cuda_version: null });
  const figures = await measure();
  // The spread of a union of suites is not narrowed by TypeScript; writeResult checks it with the schema.
  const path = writeResult({ ...modelFreeRun(started, figures.driverCudaVersion), ...record(figures) } as BenchResult, values.output);
  report(figures, path);
}
