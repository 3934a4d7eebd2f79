import { TIME_MARKS_KEPT } from './backend.ts';

/**
 * Numbers a backend's time marks in order and checks that one asked about is still readable: the
 * CUDA backend reuses its events in a ring, and the CPU twin holds callers to the same limit.
 */
export class TimeMarkSerials {
  private made = 0;

  next(): number {
    return this.made++;
  }

  check(serial: number): void {
    const age = this.made - serial;
    if (age > TIME_MARKS_KEPT) throw new Error(`a time mark ${age} marks old was read: only the latest ${TIME_MARKS_KEPT} stay readable`);
  }
}
