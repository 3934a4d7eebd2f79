import { KeelError } from '../errors.ts';

/**
 * The collectives a group of ranks runs over buffers of type `B`: a Float32Array on the CPU
 * backend (shared-memory-communicator.ts), a device buffer on CUDA (NCCL, backend/cuda/nccl.ts).
 * Every rank of the group calls each collective in the same order with the same counts; counts
 * are elements of the buffer's type. It knows nothing of models: layers ask the backend for
 * allReduce, and the backend asks its communicator.
 */
export interface Communicator<B> {
  readonly rank: number;
  readonly size: number;
  /** In place: buf[0..count) becomes the sum over the ranks of their buf. */
  allReduceSum(buf: B, count: number): void;
  /** recv[r * count ..] = rank r's send[0..count), for every rank r. */
  allGather(send: B, recv: B, count: number): void;
  /** Block r of send (count elements at r * count) goes to rank r; block r of recv came from rank r. */
  allToAll(send: B, recv: B, count: number): void;
  /** In place: every rank's buf[0..count) becomes root's. */
  broadcast(buf: B, count: number, root: number): void;
  /** Point to point: peer's matching `recv` gets buf[0..count). */
  send(buf: B, count: number, peer: number): void;
  recv(buf: B, count: number, peer: number): void;
  /** Returns once every rank has called it. */
  barrier(): void;
  destroy(): void;
}

/**
 * A rank of a parallel run failed (its worker exited or threw): every collective waiting on it
 * fails with this instead of hanging, and the engine reports it (the server answers 503).
 */
export function rankFailure(rank: number, reason: string): KeelError {
  return new KeelError('unavailable', `parallel rank ${rank} failed: ${reason}; the engine cannot run steps any more (restart it)`);
}
