const SAMPLE_INTERVAL_MS = 250;

/**
 * A running total's rate over the last few seconds: samples the total on a timer and compares
 * the current value with the oldest sample inside the window.
 */
export class TokenRate {
  private readonly samples: { time: number; total: number }[] = [];
  private readonly read: () => number;
  private readonly windowMs: number;
  private readonly timer: NodeJS.Timeout;

  constructor(read: () => number, windowMs: number) {
    this.read = read;
    this.windowMs = windowMs;
    this.sample();
    // The timer must not keep a process alive that has nothing else to do.
    this.timer = setInterval(() => this.sample(), SAMPLE_INTERVAL_MS).unref();
  }

  perSecond(): number {
    const now = performance.now();
    const oldest = this.samples.find((s) => now - s.time <= this.windowMs) ?? this.samples[this.samples.length - 1];
    const elapsed = (now - oldest.time) / 1000;
    return elapsed > 0 ? (this.read() - oldest.total) / elapsed : 0;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private sample(): void {
    const now = performance.now();
    this.samples.push({ time: now, total: this.read() });
    while (this.samples.length > 1 && now - this.samples[0].time > this.windowMs) this.samples.shift();
  }
}
