// Preloaded into the soaked server (node --import): measures its main thread's event-loop delay
// (how late a 10 ms timer fires, perf_hooks.monitorEventLoopDelay), and answers the soak over the
// IPC channel: {type: 'loop-delay', reset} -> the figures since the last reset (then resets if asked).
import { monitorEventLoopDelay } from 'node:perf_hooks';

const RESOLUTION_MS = 10;
const histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
histogram.enable();
// The histogram records the time between the timer's runs: the delay is what exceeds its period.
const delayMs = (ns) => Math.max(0, Math.round((ns / 1e6 - RESOLUTION_MS) * 10) / 10);

if (process.send) {
  process.on('message', (message) => {
    if (message?.type !== 'loop-delay') return;
    process.send({
      type: 'loop-delay',
      samples: histogram.count,
      p50_ms: delayMs(histogram.percentile(50)),
      p99_ms: delayMs(histogram.percentile(99)),
      p999_ms: delayMs(histogram.percentile(99.9)),
      max_ms: delayMs(histogram.max),
    });
    if (message.reset) histogram.reset();
  });
  // The channel must not keep the server alive once it has shut down.
  process.channel?.unref();
}
