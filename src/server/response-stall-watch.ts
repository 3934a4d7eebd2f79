import type { ServerResponse } from 'node:http';

interface Watched {
  /** Bytes the response holds that the client has not taken, at the last sweep. */
  pending: number;
  drains: number;
  drainsAtSweep: number;
  stalledSince: number | null;
}

/**
 * Ends responses whose client has stopped reading: one that holds unsent bytes which have not
 * moved (no drain, nothing taken) for `idleMs` is destroyed, which ends its request like a
 * disconnect. A stream waiting for its next token holds no bytes and is never stalled; a client
 * that reads slowly keeps its response moving.
 */
export class ResponseStallWatch {
  private readonly idleMs: number;
  private readonly watched = new Map<ServerResponse, Watched>();
  private readonly timer: NodeJS.Timeout;

  constructor(idleMs: number) {
    this.idleMs = idleMs;
    this.timer = setInterval(() => this.sweep(), Math.max(50, Math.min(1000, idleMs / 4))).unref();
  }

  watch(response: ServerResponse): void {
    const entry: Watched = { pending: 0, drains: 0, drainsAtSweep: 0, stalledSince: null };
    this.watched.set(response, entry);
    response.on('drain', () => entry.drains++);
    response.once('close', () => this.watched.delete(response));
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private sweep(): void {
    const now = performance.now();
    for (const [response, entry] of this.watched) {
      const pending = response.writableLength;
      const moved = pending === 0 || pending < entry.pending || entry.drains !== entry.drainsAtSweep;
      entry.pending = pending;
      entry.drainsAtSweep = entry.drains;
      if (moved) {
        entry.stalledSince = null;
        continue;
      }
      entry.stalledSince ??= now;
      if (now - entry.stalledSince >= this.idleMs) response.destroy();
    }
  }
}
