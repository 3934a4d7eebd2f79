import { Presets, SingleBar } from 'cli-progress';

/** How often a benchmark reports its progress when stderr is not a terminal (a log, CI). */
const LINE_INTERVAL_MS = 10_000;

export interface Progress {
  /** One more unit of work done. */
  tick(): void;
  stop(): void;
}

/**
 * Progress of a benchmark's `total` units of `unit` (iterations, requests) on stderr: a bar on a
 * terminal, else a line every `lineIntervalMs`, so that a CPU run of many minutes shows it is moving.
 */
export function benchProgress(label: string, total: number, unit: string, enabled: boolean, lineIntervalMs = LINE_INTERVAL_MS): Progress {
  if (!enabled) return { tick: () => undefined, stop: () => undefined };
  if (process.stderr.isTTY) {
    const bar = new SingleBar(
      { stream: process.stderr, format: `${label} [{bar}] {value}/{total} ${unit} {duration}s, eta {eta}s`, hideCursor: true },
      Presets.shades_classic,
    );
    bar.start(total, 0);
    return { tick: () => bar.increment(), stop: () => bar.stop() };
  }
  const start = performance.now();
  let done = 0;
  let lastLine = start;
  return {
    tick: () => {
      done++;
      const now = performance.now();
      if (now - lastLine < lineIntervalMs) return;
      lastLine = now;
      process.stderr.write(`${label}: ${done}/${total} ${unit}, ${Math.round((now - start) / 1000)} s\n`);
    },
    stop: () => undefined,
  };
}
