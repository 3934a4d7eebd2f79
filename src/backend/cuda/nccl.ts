import koffi, { type LibraryHandle } from 'koffi';
import { KeelError } from '../../errors.ts';
import type { Communicator } from '../../parallel/communicator.ts';
import { hasFailed, throwIfFailed, type FailureBoard } from '../../parallel/failure-board.ts';
import { cudaCallError } from './cuda-error.ts';
import type { DeviceDType } from './cuda-tensor.ts';
import type { DevicePtr, Handle, NativeFn } from './driver-api.ts';
import { openLibrary, processDiscoveryEnv } from './library-discovery.ts';

/** A device buffer a collective reads or writes: its address and element type. */
export interface DeviceBuffer {
  ptr: DevicePtr;
  dtype: DeviceDType;
}

/** Bytes of ncclUniqueId: the opaque token rank 0 makes and hands every other rank (nccl.h). */
export const NCCL_UNIQUE_ID_BYTES = 128;

const NCCL_DTYPE: Record<DeviceDType, number> = { f32: 7, bf16: 9 };
const NCCL_SUM = 0;

/** libnccl.so.2's entry points, bound once per process. */
class NcclLibrary {
  readonly fns: Record<string, NativeFn> = {};
  private readonly errorString: NativeFn;

  constructor(lib: LibraryHandle) {
    // ncclCommInitRank takes the id by value: a 128-byte struct.
    koffi.struct('ncclUniqueId', { internal: koffi.array('uint8_t', NCCL_UNIQUE_ID_BYTES, 'Typed') });
    this.errorString = lib.func('const char *ncclGetErrorString(int result)');
    for (const proto of [
      'int ncclGetUniqueId(_Out_ ncclUniqueId *id)',
      'int ncclCommInitRank(_Out_ void **comm, int nranks, ncclUniqueId id, int rank)',
      'int ncclCommDestroy(void *comm)',
      // By address: another thread than the communicator's owner aborts it (abortNcclCommunicator).
      'int ncclCommAbort(uint64_t comm)',
      'int ncclAllReduce(uint64_t send, uint64_t recv, size_t count, int dtype, int op, void *comm, void *stream)',
      'int ncclAllGather(uint64_t send, uint64_t recv, size_t count, int dtype, void *comm, void *stream)',
      'int ncclBroadcast(uint64_t send, uint64_t recv, size_t count, int dtype, int root, void *comm, void *stream)',
      'int ncclSend(uint64_t send, size_t count, int dtype, int peer, void *comm, void *stream)',
      'int ncclRecv(uint64_t recv, size_t count, int dtype, int peer, void *comm, void *stream)',
      'int ncclGroupStart()',
      'int ncclGroupEnd()',
    ]) {
      this.fns[/\b(nccl\w+)\(/.exec(proto)![1]] = lib.func(proto);
    }
  }

  call(name: string, ...args: unknown[]): void {
    const code = this.fns[name](...args) as number;
    if (code !== 0) throw cudaCallError(name, code, (this.errorString(code) as string | null) ?? `ncclResult ${code}`);
  }
}

let library: NcclLibrary | null = null;

/** NCCL, found as the other CUDA libraries are (CUDA_HOME, the toolkit, the loader path, pip's nvidia/nccl wheel). */
function nccl(): NcclLibrary {
  if (library !== null) return library;
  const loaded = openLibrary('nccl', processDiscoveryEnv());
  if ('failures' in loaded) {
    throw new KeelError('backend', `libnccl.so.2 not found (parallel runs on CUDA need NCCL: pip install nvidia-nccl-cu12, or set CUDA_HOME); tried ${loaded.failures.join('; ')}`);
  }
  return (library = new NcclLibrary(loaded.handle));
}

/** A new communicator id, made by rank 0 and handed to every rank of the group (bootstrap). */
export function ncclUniqueId(): Uint8Array {
  const out: { internal: Uint8Array }[] = [{ internal: new Uint8Array(NCCL_UNIQUE_ID_BYTES) }];
  nccl().call('ncclGetUniqueId', out);
  return out[0].internal;
}

/**
 * Aborts the communicator at `address` (NcclCommunicator.address) from any thread of its process:
 * its pending collectives end, so a host waiting on the stream for a peer that died stops
 * waiting. The communicator is freed; its owner must not use it again (it sees the run's failure
 * board first).
 */
export function abortNcclCommunicator(address: bigint): void {
  nccl().call('ncclCommAbort', address);
}

/**
 * One rank's NCCL communicator, every collective queued on `stream` (the backend's): work queued
 * before it is what it reads, work after it sees its result, and a CUDA graph recording the
 * stream records the collective too. The host never waits, except in `barrier`. In a run with a
 * failure board, a failed rank (reported there, the communicator aborted by whoever watches the
 * ranks) makes every later collective throw that failure instead of touching NCCL.
 */
export class NcclCommunicator implements Communicator<DeviceBuffer> {
  readonly rank: number;
  readonly size: number;
  private readonly comm: Handle;
  private readonly stream: Handle;
  private readonly lib: NcclLibrary;
  /** One float for `barrier`'s all-reduce. */
  private readonly scratch: DevicePtr;
  private readonly synchronize: () => void;
  private readonly failures: FailureBoard | null;

  /**
   * Joins the group `id` as `rank` of `size` (blocks until every rank has joined). `scratch` is 4
   * device bytes the communicator may use; `synchronize` waits for the stream.
   */
  constructor(id: Uint8Array, size: number, rank: number, stream: Handle, scratch: DevicePtr, synchronize: () => void, failures: FailureBoard | null = null) {
    if (id.length !== NCCL_UNIQUE_ID_BYTES) throw new Error(`an NCCL unique id has ${NCCL_UNIQUE_ID_BYTES} bytes, not ${id.length}`);
    this.lib = nccl();
    const box: unknown[] = [null];
    this.lib.call('ncclCommInitRank', box, size, { internal: id }, rank);
    this.comm = box[0] as Handle;
    this.rank = rank;
    this.size = size;
    this.stream = stream;
    this.scratch = scratch;
    this.synchronize = synchronize;
    this.failures = failures;
  }

  /** The communicator's address, for abortNcclCommunicator on another thread. */
  get address(): bigint {
    return BigInt(koffi.address(this.comm));
  }

  allReduceSum(buf: DeviceBuffer, count: number): void {
    this.throwIfFailed();
    this.lib.call('ncclAllReduce', buf.ptr, buf.ptr, count, NCCL_DTYPE[buf.dtype], NCCL_SUM, this.comm, this.stream);
  }

  allGather(send: DeviceBuffer, recv: DeviceBuffer, count: number): void {
    this.throwIfFailed();
    sameDtype(send, recv, 'allGather');
    this.lib.call('ncclAllGather', send.ptr, recv.ptr, count, NCCL_DTYPE[send.dtype], this.comm, this.stream);
  }

  /** NCCL has no all-to-all: a send and a receive per peer, grouped so they run as one. */
  allToAll(send: DeviceBuffer, recv: DeviceBuffer, count: number): void {
    this.throwIfFailed();
    sameDtype(send, recv, 'allToAll');
    const bytes = count * elementBytes(send.dtype);
    const dtype = NCCL_DTYPE[send.dtype];
    this.lib.call('ncclGroupStart');
    try {
      for (let peer = 0; peer < this.size; peer++) {
        this.lib.call('ncclSend', send.ptr + peer * bytes, count, dtype, peer, this.comm, this.stream);
        this.lib.call('ncclRecv', recv.ptr + peer * bytes, count, dtype, peer, this.comm, this.stream);
      }
    } finally {
      this.lib.call('ncclGroupEnd');
    }
  }

  broadcast(buf: DeviceBuffer, count: number, root: number): void {
    this.throwIfFailed();
    this.lib.call('ncclBroadcast', buf.ptr, buf.ptr, count, NCCL_DTYPE[buf.dtype], root, this.comm, this.stream);
  }

  send(buf: DeviceBuffer, count: number, peer: number): void {
    this.throwIfFailed();
    this.lib.call('ncclSend', buf.ptr, count, NCCL_DTYPE[buf.dtype], peer, this.comm, this.stream);
  }

  recv(buf: DeviceBuffer, count: number, peer: number): void {
    this.throwIfFailed();
    this.lib.call('ncclRecv', buf.ptr, count, NCCL_DTYPE[buf.dtype], peer, this.comm, this.stream);
  }

  barrier(): void {
    this.allReduceSum({ ptr: this.scratch, dtype: 'f32' }, 1);
    this.synchronize();
  }

  /** An aborted communicator was freed by the abort. */
  destroy(): void {
    if (this.failures === null || !hasFailed(this.failures)) this.lib.call('ncclCommDestroy', this.comm);
  }

  private throwIfFailed(): void {
    if (this.failures !== null) throwIfFailed(this.failures);
  }
}

function elementBytes(dtype: DeviceDType): number {
  return dtype === 'bf16' ? 2 : 4;
}

function sameDtype(a: DeviceBuffer, b: DeviceBuffer, what: string): void {
  if (a.dtype !== b.dtype) throw new Error(`${what}: send is ${a.dtype} but recv is ${b.dtype}`);
}
