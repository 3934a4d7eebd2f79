import os from 'node:os';
import { doctorReport } from '../backend/cuda/availability.ts';
import { parseFlags } from './parse-flags.ts';

export const DOCTOR_HELP = `Usage: keel doctor [--json]

Reports what Keel can run on: the GPU, driver, compute capability, free memory, which CUDA
libraries were found (and where), and the backend \`--backend auto\` will pick.`;

export async function doctorCommand(argv: string[]): Promise<void> {
  const { values } = parseFlags('keel doctor', { args: argv, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    console.log(DOCTOR_HELP);
    return;
  }
  const cuda = doctorReport();
  const report = {
    node: process.version,
    cpu: `${os.cpus()[0]?.model ?? 'unknown'} x ${os.cpus().length}`,
    backend: cuda.available ? 'cuda' : 'cpu',
    cuda,
  };
  if (values.json) {
    console.log(JSON.stringify(snakeCaseKeys(report), null, 2));
    return;
  }
  const line = (label: string, value: unknown) => console.log(`${label.padEnd(22)}${value ?? 'not found'}`);
  line('node', report.node);
  line('cpu', report.cpu);
  line('backend (auto)', cuda.available ? 'cuda' : `cpu (${cuda.problem})`);
  if (cuda.gpu) {
    line('gpu', cuda.gpu.name);
    line('compute capability', cuda.gpu.computeCapability);
    line('multiprocessors', cuda.gpu.multiprocessors);
    line('memory free / total', `${gib(cuda.gpu.memoryFreeBytes)} / ${gib(cuda.gpu.memoryTotalBytes)} GiB`);
  }
  line('driver', cuda.driverVersion);
  line('driver CUDA version', cuda.driverCudaVersion);
  line('NVRTC version', cuda.nvrtcVersion);
  for (const [name, path] of Object.entries(cuda.libraries)) line(`lib ${name}`, path);
  line('kernel cache', cuda.kernelCacheDir);
}

/** The report with its keys spelled as Keel's HTTP API and other JSON outputs spell theirs. */
function snakeCaseKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(snakeCaseKeys);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(Object.entries(value).map(([key, v]) => [key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), snakeCaseKeys(v)]));
}

function gib(bytes: number): string {
  return (bytes / 2 ** 30).toFixed(1);
}
