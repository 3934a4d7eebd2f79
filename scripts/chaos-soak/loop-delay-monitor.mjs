// Preloaded into the soaked server (node --import): measures its main thread's event-loop delay
// (how late a 10 ms timer fires, perf_hooks.monitorEventLoopDelay) and the CPU time that thread
// used, and answers the soak over the IPC channel: {type: 'loop-delay', reset} -> the figures
// since the last reset (then resets if asked).
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const RESOLUTION_MS = 10;
const histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
histogram.enable();
// The histogram records the time between the timer's runs: the delay is what exceeds its period.
const delayMs = (ns) => Math.max(0, Math.round((ns / 1e6 - RESOLUTION_MS) * 10) / 10);

/** The main thread's user and system CPU time in ms (Linux: its /proc task, in ticks of 10 ms); null elsewhere. */
function mainThreadCpuMs() {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command's name.
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return null;
  }
}
let since = { cpuMs: mainThreadCpuMs(), at: performance.now() };

if (process.send) {
  process.on('message', (message) => {
    if (message?.type !== 'loop-delay') return;
    const cpuMs = mainThreadCpuMs();
    const now = performance.now();
    process.send({
      type: 'loop-delay',
      samples: histogram.count,
      p50_ms: delayMs(histogram.percentile(50)),
      p99_ms: delayMs(histogram.percentile(99)),
      p999_ms: delayMs(histogram.percentile(99.9)),
      max_ms: delayMs(histogram.max),
      // Of the wall time since the last reset, the share the main thread spent on a CPU.
      main_thread_busy: cpuMs === null || since.cpuMs === null ? null : Math.round(((cpuMs - since.cpuMs) / (now - since.at)) * 1000) / 1000,
    });
    if (message.reset) {
      histogram.reset();
      since = { cpuMs, at: now };
    }
  });
  // The channel must not keep the server alive once it has shut down.
  process.channel?.unref();
}
