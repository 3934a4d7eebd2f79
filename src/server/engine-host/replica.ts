import type { EngineStats } from '../../engine/llm-engine.ts';
import type { ApiError } from '../openai-errors.ts';
import { combinedStats } from './combined-stats.ts';
import type { EngineClient } from './engine-client.ts';
import { RestartBudget } from './restart-budget.ts';

/** How a replica is started again: a new engine like the first, readied (adapters loaded since start) before it serves. */
export interface ReplicaRestart {
  start(): Promise<EngineClient>;
  ready(client: EngineClient): Promise<void>;
  maxRestarts: number;
}

/** What happens to a replica, for the server's log. */
export type ReplicaEvent =
  | { kind: 'stopped'; cause: Error; restartInMs: number | null }
  | { kind: 'restart-failed'; error: Error; restartInMs: number | null }
  | { kind: 'restarted'; restarts: number };

/**
 * One engine replica of the server (engine-replicas.ts): the engine serving it now and, when its
 * process dies, its restarts (restart-budget.ts says when; none without `restart`). While it is
 * down its requests have failed with a 503 and the router sends it none; once a restart has
 * loaded, it serves again. Its totals (tokens, preemptions, drafts) carry over from one engine to
 * the next, so that counters never go back.
 */
export class Replica {
  /** Resolves once the replica is down for good (no restart, or none left), with why it died. */
  readonly stopped: Promise<Error>;
  private engine: EngineClient;
  private readonly restart: ReplicaRestart | null;
  private readonly budget: RestartBudget;
  private readonly onEvent: (event: ReplicaEvent) => void;
  /** The totals of the engines before this one. */
  private earlier: EngineStats | null = null;
  private restartCount = 0;
  private isRestarting = false;
  private closed = false;
  /** Ends the wait before the next attempt early (on close). */
  private cancelWait: () => void = () => undefined;
  /** The restart under way, which close waits for. */
  private restarting: Promise<void> = Promise.resolve();
  private reportStopped: (cause: Error) => void = () => undefined;

  constructor(engine: EngineClient, restart: ReplicaRestart | null, onEvent: (event: ReplicaEvent) => void) {
    this.engine = engine;
    this.restart = restart;
    this.budget = new RestartBudget(restart?.maxRestarts ?? 0);
    this.onEvent = onEvent;
    this.stopped = new Promise((resolve) => (this.reportStopped = resolve));
    this.watch(engine);
  }

  /** The engine serving now, or the dead one until a restart replaces it. */
  get client(): EngineClient {
    return this.engine;
  }

  /** Why it cannot serve now (dead, restarting or not), if it cannot. */
  get failure(): ApiError | null {
    return this.engine.failure;
  }

  /** Whether it is down and a restart is waiting or loading. */
  get restartPending(): boolean {
    return this.isRestarting;
  }

  /** Restarts that brought it back. */
  get restarts(): number {
    return this.restartCount;
  }

  /** Its engine's stats, with the totals of the engines before it added. */
  stats(): EngineStats {
    const now = this.engine.stats();
    return this.earlier === null ? now : combinedStats([{ alive: false, stats: this.earlier }, { alive: this.engine.failure === null, stats: now }]);
  }

  /** Ends its engine as a crash would (fault drills, tests); it restarts as after any death. */
  kill(): void {
    this.engine.kill();
  }

  /** Stops restarting (waiting for a restart under way) and closes its engine; resolves with what went wrong, if anything did. */
  async close(): Promise<Error | null> {
    this.closed = true;
    this.cancelWait();
    await this.restarting;
    return this.engine.close();
  }

  private watch(engine: EngineClient): void {
    void engine.stopped.then((cause) => {
      if (this.closed) return;
      this.restarting = this.restartAfter(cause);
    });
  }

  /** Starts the replica again, as often as the budget allows, or reports it down for good. */
  private async restartAfter(death: Error): Promise<void> {
    let cause = death;
    let delay = this.nextDelay();
    this.onEvent({ kind: 'stopped', cause, restartInMs: delay });
    while (delay !== null && !this.closed) {
      this.isRestarting = true;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay!);
        this.cancelWait = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      if (this.closed) break;
      try {
        const engine = await this.restart!.start();
        try {
          await this.restart!.ready(engine);
        } catch (error) {
          await engine.close();
          throw error;
        }
        if (this.closed) {
          await engine.close();
          break;
        }
        this.earlier = this.stats();
        this.engine = engine;
        this.restartCount++;
        this.isRestarting = false;
        this.budget.serving();
        this.watch(engine);
        this.onEvent({ kind: 'restarted', restarts: this.restartCount });
        return;
      } catch (error) {
        cause = error as Error;
        delay = this.nextDelay();
        if (!this.closed) this.onEvent({ kind: 'restart-failed', error: cause, restartInMs: delay });
      }
    }
    this.isRestarting = false;
    if (!this.closed) this.reportStopped(cause);
  }

  private nextDelay(): number | null {
    return this.restart === null ? null : this.budget.nextDelay();
  }
}
