import { rankFailure } from './communicator.ts';

/**
 * Shared memory where the first failure of a parallel run is written (which rank, and why), so
 * that every rank blocked in a collective, whatever its group, stops waiting and throws it. It
 * crosses threads in workerData; the thread that watches the workers writes it when one exits.
 */
export interface FailureBoard {
  readonly words: SharedArrayBuffer;
  readonly reason: SharedArrayBuffer;
}

const REASON_BYTES = 1024;

export function createFailureBoard(): FailureBoard {
  return { words: new SharedArrayBuffer(8), reason: new SharedArrayBuffer(REASON_BYTES) };
}

/** Records that `rank` failed, unless another failure was recorded first. */
export function reportFailure(board: FailureBoard, rank: number, reason: string): void {
  const words = new Int32Array(board.words);
  if (Atomics.compareExchange(words, 1, 0, 1) !== 0) return;
  const bytes = new TextEncoder().encode(reason).subarray(0, REASON_BYTES);
  new Uint8Array(board.reason).set(bytes);
  Atomics.store(words, 0, rank + 1);
  Atomics.notify(words, 0);
}

/** Whether a failure was recorded. */
export function hasFailed(board: FailureBoard): boolean {
  return Atomics.load(new Int32Array(board.words), 0) !== 0;
}

/** Throws the recorded failure, if any. */
export function throwIfFailed(board: FailureBoard): void {
  const words = new Int32Array(board.words);
  const rankPlusOne = Atomics.load(words, 0);
  if (rankPlusOne === 0) return;
  const bytes = new Uint8Array(board.reason).slice();
  const end = bytes.indexOf(0);
  throw rankFailure(rankPlusOne - 1, new TextDecoder().decode(end === -1 ? bytes : bytes.subarray(0, end)));
}
