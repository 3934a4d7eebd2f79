// The entry of every worker thread the server starts: it loads the thread's module
// (workerData.entry) as bin/keel loads the CLI. A TypeScript module (Keel run from its sources)
// runs with Node's own type stripping where it has it (22.18+) and tsx's loader otherwise; the
// published build's JavaScript needs neither. Loader hooks registered in the parent do not reach a worker.
import { workerData } from 'node:worker_threads';

if (workerData.entry.endsWith('.ts') && !process.features.typescript) {
  const { register } = await import('tsx/esm/api');
  register();
}
await import(workerData.entry);
