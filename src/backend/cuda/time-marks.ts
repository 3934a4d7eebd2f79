import { TIME_MARKS_KEPT, type TimeMark } from '../backend.ts';
import { TimeMarkSerials } from '../time-mark-serials.ts';
import type { CudaDriver, Handle } from './driver-api.ts';

interface CudaTimeMark extends TimeMark {
  serial: number;
}

/**
 * Backend.markTime on CUDA: timing events recorded on the device's stream, taken in turn from a
 * ring of TIME_MARKS_KEPT, each created the first time its turn comes (a run never marked creates
 * none). An event recorded around a graph launch on the same stream times the graph's replay.
 */
export class CudaTimeMarks {
  private readonly driver: CudaDriver;
  private readonly stream: Handle;
  private readonly events: (Handle | null)[] = new Array<Handle | null>(TIME_MARKS_KEPT).fill(null);
  private readonly serials = new TimeMarkSerials();

  constructor(driver: CudaDriver, stream: Handle) {
    this.driver = driver;
    this.stream = stream;
  }

  mark(): TimeMark {
    const serial = this.serials.next();
    const slot = serial % TIME_MARKS_KEPT;
    const event = (this.events[slot] ??= this.driver.createEvent());
    this.driver.recordEvent(event, this.stream);
    const mark: CudaTimeMark = { backend: 'cuda', serial };
    return mark;
  }

  /** Waits for `end` (already passed when work queued after it was read back), then times the two. */
  elapsedMs(start: TimeMark, end: TimeMark): number {
    const [a, b] = [this.event(start), this.event(end)];
    this.driver.synchronizeEvent(b);
    return this.driver.elapsedMs(a, b);
  }

  dispose(): void {
    for (const event of this.events) if (event !== null) this.driver.destroyEvent(event);
    this.events.fill(null);
  }

  private event(mark: TimeMark): Handle {
    if (mark.backend !== 'cuda') throw new Error(`a ${mark.backend} time mark was given to the CUDA backend`);
    const { serial } = mark as CudaTimeMark;
    this.serials.check(serial);
    return this.events[serial % TIME_MARKS_KEPT]!;
  }
}
