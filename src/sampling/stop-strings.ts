export interface StopMatch {
  /** Text that is now safe to show. */
  emit: string;
  stopped: boolean;
  /** The stop string that ended generation. */
  matched: string | null;
}

/**
 * Finds stop strings in streamed text. Text that might still become the start of a stop string is
 * held back, so a stop string split across tokens is never partly shown. When several stop strings
 * occur, the one completed first wins (ending earliest; of those, starting earliest): the answer is
 * the same however the text was split into tokens.
 */
export class StopStringMatcher {
  private readonly stops: readonly string[];
  private readonly includeStopStr: boolean;
  private readonly longestStop: number;
  /** Text received but not yet emitted: always a proper prefix of some stop string. */
  private heldBack = '';
  private matched: string | null = null;

  constructor(stops: readonly string[], includeStopStr: boolean) {
    if (stops.some((stop) => stop.length === 0)) throw new RangeError('stop strings must not be empty');
    this.stops = [...stops];
    this.includeStopStr = includeStopStr;
    this.longestStop = Math.max(0, ...stops.map((stop) => stop.length));
  }

  push(newText: string): StopMatch {
    if (this.matched !== null) throw new Error(`StopStringMatcher.push after stop string ${JSON.stringify(this.matched)} matched`);
    const text = this.heldBack + newText;
    const found = this.firstCompleted(text);
    if (found) {
      this.matched = found.stop;
      this.heldBack = '';
      const end = this.includeStopStr ? found.start + found.stop.length : found.start;
      return { emit: text.slice(0, end), stopped: true, matched: found.stop };
    }
    const hold = this.longestTailStartingAStop(text);
    this.heldBack = text.slice(text.length - hold);
    return { emit: text.slice(0, text.length - hold), stopped: false, matched: null };
  }

  /** The held-back text, released when generation ends for a reason other than a stop string. */
  flush(): string {
    const text = this.heldBack;
    this.heldBack = '';
    return text;
  }

  private firstCompleted(text: string): { stop: string; start: number } | null {
    let best: { stop: string; start: number } | null = null;
    let bestEnd = Infinity;
    for (const stop of this.stops) {
      const start = text.indexOf(stop);
      if (start < 0) continue;
      const end = start + stop.length;
      if (end < bestEnd || (end === bestEnd && best !== null && start < best.start)) {
        best = { stop, start };
        bestEnd = end;
      }
    }
    return best;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
  private longestTailStartingAStop(text: string): number {
    for (let length = Math.min(text.length, this.longestStop - 1); length > 0; length--) {
      const tail = text.slice(text.length - length);
      if (this.stops.some((stop) => stop.startsWith(tail))) return length;
    }
    return 0;
  }
}
