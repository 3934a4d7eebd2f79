import { KeelError } from '../../errors.ts';
import { writeResult } from '../../bench/result-file.ts';
import type { BenchResult } from '../../bench/result-schema.ts';
import { collectEnvironment, modelFreeRun } from '../../bench/run-environment.ts';
import { parseFlags } from '../parse-flags.ts';
import { choiceList } from './bench-flags.ts';

/** What a kernel suite records: its name, settings and figures. */
type KernelRecord = Pick<Extract<BenchResult, { suite: 'attention' | 'lora' }>, 'suite' | 'config' | 'results'>;

/**
 * The frame of the kernel suites (`keel bench attention`, `keel bench lora`): --output and --help,
 * --only where the suite names `sections` (a comma-separated choice of them; all by default), the
 * CUDA check, then `measure` of the chosen sections on the GPU, its result file (`record`) and its
 * console lines (`report`, given the file's path).
 */
export async function kernelBench<F extends { driverCudaVersion: number }, S extends string = never>(
  name: string,
  argv: string[],
  help: string,
  measure: (sections: ReadonlySet<S>) => Promise<F>,
  record: (figures: F) => KernelRecord,
  report: (figures: F, path: string) => void,
  sections: readonly S[] = [],
): Promise<void> {
  const { values } = parseFlags(`keel bench ${name}`, {
    args: argv,
    options: { output: { type: 'string' }, only: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log(help);
    return;
  }
  const only = chosenSections(name, sections, values.only);
  const { cudaAvailability } = await import('../../backend/cuda/availability.ts');
  const available = cudaAvailability();
  if (!available.ok) throw new KeelError('unavailable', `keel bench ${name} needs the CUDA backend: ${available.reason}`);
  const started = collectEnvironment({ backend: 'cuda', name: available.deviceName, cuda_version: null });
  const figures = await measure(only);
  // The spread of a union of suites is not narrowed by TypeScript; writeResult checks it with the schema.
  const path = writeResult({ ...modelFreeRun(started, figures.driverCudaVersion), ...record(figures) } as BenchResult, values.output);
  report(figures, path);
}

/** The sections `--only` names (each one of `sections`), or all of them without it. */
function chosenSections<S extends string>(name: string, sections: readonly S[], only: string | undefined): ReadonlySet<S> {
  if (only === undefined) return new Set(sections);
  if (sections.length === 0) throw new KeelError('invalid_argument', `keel bench ${name} takes no --only: it has one set of figures`);
  return new Set(choiceList('--only', only, sections));
}
