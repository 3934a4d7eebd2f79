import type { StreamDelta } from '../../engine/outputs.ts';
import type { RequestUpdate } from './engine-protocol.ts';

/**
 * The engine thread's updates on their way to the server, one batch in flight at a time. The
 * steps' updates gather here; `send` gets them once the turn of the engine's event loop that made
 * them is over and the server has acknowledged the previous batch. Until then each request's
 * updates merge into one: a completion's new tokens, text and logprobs join those it already had.
 *
 * So a server that keeps up gets every step at once, and one that falls behind (its event loop
 * busy with requests and writes) gets fewer, larger batches instead of a queue of messages that it
 * would then handle all in one turn.
 */
export class UpdateOutbox {
  private readonly pending = new Map<number, RequestUpdate>();
  /** Deltas this outbox made by merging, which it may extend in place. */
  private readonly merged = new WeakSet<StreamDelta>();
  /** Batches sent and not yet acknowledged: one, but for those a failure sends early (sendNow). */
  private inFlight = 0;
  private scheduled = false;
  private readonly send: (updates: RequestUpdate[]) => void;

  constructor(send: (updates: RequestUpdate[]) => void) {
    this.send = send;
  }

  add(update: RequestUpdate): void {
    const held = this.pending.get(update.id);
    // Held updates are the outbox's own, to merge into: the engine's arrays and deltas stay as they were.
    if (held === undefined) this.pending.set(update.id, { ...update, deltas: [...update.deltas] });
    else {
      for (const delta of update.deltas) this.mergeDelta(held.deltas, delta);
      held.finished = update.finished;
    }
    this.schedule();
  }

  /** Whether updates wait to be sent: stats sent apart from a batch would run ahead of them. */
  get holding(): boolean {
    return this.pending.size > 0;
  }

  /** The server has handled a batch. */
  acknowledged(): void {
    this.inFlight--;
    this.schedule();
  }

  /** Sends what is held at once, acknowledged or not: before a failure, which must not overtake its request's updates. */
  sendNow(): void {
    if (this.pending.size === 0) return;
    const updates = [...this.pending.values()];
    this.pending.clear();
    this.inFlight++;
    this.send(updates);
  }

  private schedule(): void {
    if (this.inFlight > 0 || this.scheduled || this.pending.size === 0) return;
    this.scheduled = true;
    // After this turn: the other requests' updates of the same step are still on their way.
    setImmediate(() => {
      this.scheduled = false;
      if (this.inFlight === 0) this.sendNow();
    });
  }

  /**
   * Appends `delta` to a request's deltas: into the last one of its completion when they can merge,
   * else as one more. An abort's delta stays apart: readers drop it, not the text that came before.
   */
  private mergeDelta(deltas: StreamDelta[], delta: StreamDelta): void {
    let at = deltas.length - 1;
    while (at >= 0 && deltas[at].index !== delta.index) at--;
    const last = at < 0 ? undefined : deltas[at];
    if (last === undefined || last.finishReason !== null || delta.finishReason === 'abort') {
      deltas.push(delta);
      return;
    }
    // The engine's own deltas are copied before they grow; those merged here already grow in place.
    const into = this.merged.has(last) ? last : { ...last, tokenIds: [...last.tokenIds], logprobs: last.logprobs && [...last.logprobs] };
    this.merged.add(into);
    deltas[at] = into;
    into.text += delta.text;
    for (const id of delta.tokenIds) into.tokenIds.push(id);
    if (delta.logprobs !== null) {
      into.logprobs ??= [];
      for (const position of delta.logprobs) into.logprobs.push(position);
    }
    into.finishReason = delta.finishReason;
    into.stopReason = delta.stopReason;
  }
}
