import type { FastifyReply } from 'fastify';
import { shuttingDown } from './openai-errors.ts';

/** Why a generation's signal was aborted. */
export type AbortReason = 'client_gone' | 'shutdown';

/**
 * The generation requests being served, for a graceful shutdown: once draining, new ones are
 * refused; `abortAll` ends those still running when the drain timeout is up.
 */
export class InFlightRequests {
  private readonly controllers = new Set<AbortController>();
  private readonly idleWaiters: (() => void)[] = [];
  private draining = false;

  get size(): number {
    return this.controllers.size;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  /**
   * Tracks a request until its response has closed. The returned signal aborts when the client
   * disconnects first ('client_gone') or when shutdown stops waiting ('shutdown').
   */
  track(reply: FastifyReply): AbortSignal {
    if (this.draining) throw shuttingDown();
    const controller = new AbortController();
    const response = reply.raw;
    if (response.destroyed || response.socket === null || response.socket.destroyed) {
      controller.abort('client_gone' satisfies AbortReason);
      return controller.signal;
    }
    this.controllers.add(controller);
    response.once('close', () => {
      if (!response.writableFinished) controller.abort('client_gone' satisfies AbortReason);
      this.controllers.delete(controller);
      if (this.controllers.size === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    });
    return controller.signal;
  }

  /** Refuse new requests from now on. */
  startDraining(): void {
    this.draining = true;
  }

  abortAll(): void {
    for (const controller of this.controllers) controller.abort('shutdown' satisfies AbortReason);
  }

  whenIdle(): Promise<void> {
    if (this.controllers.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
