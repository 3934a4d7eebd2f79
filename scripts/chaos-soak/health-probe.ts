import { Worker } from 'node:worker_threads';

/** One /health answer: when it was asked (ms since the epoch), how long it took, its status (0: no answer). */
export interface HealthSample {
  at: number;
  ms: number;
  status: number;
}

// On a thread of its own: the soak's thousand clients share the main thread, and must not delay the probe.
const PROBE = `
const { parentPort, workerData } = require('node:worker_threads');
const samples = [];
let stopping = false;
parentPort.once('message', () => (stopping = true));
(async () => {
  while (!stopping) {
    const at = performance.now();
    const asked = performance.timeOrigin + at;
    let status = 0;
    try {
      const response = await fetch(workerData.url + '/health', { signal: AbortSignal.timeout(30000) });
      await response.text();
      status = response.status;
    } catch {}
    samples.push({ at: asked, ms: performance.now() - at, status });
    await new Promise((resolve) => setTimeout(resolve, workerData.intervalMs));
  }
  parentPort.postMessage(samples);
})();
`;

/** Polls GET /health every `intervalMs`, one request at a time, until stopped. */
export function startHealthProbe(url: string, intervalMs: number): { stop(): Promise<HealthSample[]> } {
  const worker = new Worker(PROBE, { eval: true, workerData: { url, intervalMs } });
  const samples = new Promise<HealthSample[]>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return {
    stop: async () => {
      worker.postMessage('stop');
      const result = await samples;
      await worker.terminate();
      return result;
    },
  };
}
