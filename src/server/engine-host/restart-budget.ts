/** The wait before a dead replica's first restart; each attempt in a row doubles it. */
export const FIRST_RESTART_DELAY_MS = 1_000;
/** The longest wait between restarts. */
export const MAX_RESTART_DELAY_MS = 30_000;
/** A restarted replica that has served this long has recovered: its next death starts a fresh run of attempts. */
export const RECOVERED_AFTER_MS = 10 * 60_000;

/**
 * When a data-parallel replica whose process died is started again (`maxReplicaRestarts`,
 * docs/parallelism.md): at most that many attempts in a row, a restart that fails to load
 * counting as one, 1 s, 2 s, 4 s, … apart (capped at 30 s), so that a replica that cannot come
 * back (a bad GPU, memory taken by another process) is given up on instead of crash-looping. A
 * replica that has served for 10 minutes since its last restart counts from zero again.
 */
export class RestartBudget {
  private readonly maxRestarts: number;
  private readonly now: () => number;
  private attempts = 0;
  private servingSince: number | null = null;

  constructor(maxRestarts: number, now: () => number = Date.now) {
    this.maxRestarts = maxRestarts;
    this.now = now;
  }

  /** The replica died, or an attempt failed: the wait before the next attempt, or null to give up. */
  nextDelay(): number | null {
    if (this.servingSince !== null && this.now() - this.servingSince >= RECOVERED_AFTER_MS) this.attempts = 0;
    this.servingSince = null;
    if (this.attempts >= this.maxRestarts) return null;
    return Math.min(FIRST_RESTART_DELAY_MS * 2 ** this.attempts++, MAX_RESTART_DELAY_MS);
  }

  /** A restart succeeded: the replica serves from now. */
  serving(): void {
    this.servingSince = this.now();
  }
}
