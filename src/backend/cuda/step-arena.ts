import type { DevicePtr } from './driver-api.ts';

/** What the arena needs from a device: plain allocations, and a way to wait before freeing. */
export interface ArenaMemory {
  alloc(bytes: number): DevicePtr;
  free(ptr: DevicePtr): void;
  synchronize(): void;
}

const ALIGN = 256;

/**
 * Bump allocator for the tensors of one forward step, reset by `beginStep`. The same sequence of
 * allocations yields the same addresses every step, which is what replaying a captured CUDA
 * graph needs. When a step outgrows the arena, extra chunks serve it, and the next reset merges
 * everything into one chunk large enough for that step.
 */
export class StepArena {
  private readonly memory: ArenaMemory;
  private chunks: { ptr: DevicePtr; bytes: number }[] = [];
  private offset = 0;
  private usedThisStep = 0;
  private merges = 0;

  constructor(memory: ArenaMemory, initialBytes: number) {
    this.memory = memory;
    this.chunks.push({ ptr: memory.alloc(initialBytes), bytes: initialBytes });
  }

  /**
   * Changes whenever the arena's memory is replaced: addresses handed out before (such as those
   * recorded in a CUDA graph) are no longer valid.
   */
  get generation(): number {
    return this.merges;
  }

  /** Whether this step outgrew the arena: its later tensors live in chunks the next reset frees. */
  get overflowed(): boolean {
    return this.chunks.length > 1;
  }

  /** Bytes the largest single chunk holds (the arena's steady-state size). */
  get capacityBytes(): number {
    return this.chunks[0].bytes;
  }

  reset(): void {
    if (this.chunks.length > 1) {
      const needed = Math.ceil((this.usedThisStep * 1.25) / ALIGN) * ALIGN;
      // Kernels of the last step may still read these chunks.
      this.memory.synchronize();
      for (const chunk of this.chunks) this.memory.free(chunk.ptr);
      this.chunks = [{ ptr: this.memory.alloc(needed), bytes: needed }];
      this.merges++;
    }
    this.offset = 0;
    this.usedThisStep = 0;
  }

  /** Where the next allocation of this step goes in the current chunk: what `advanceTo` takes. */
  get position(): number {
    return this.offset;
  }

  /**
   * Counts the bytes up to `position` (of a step that stayed in one chunk) as allocated: a
   * replayed graph's tensors, which its recording allocated there, so that later allocations of
   * the step do not overwrite them.
   */
  advanceTo(position: number): void {
    if (this.overflowed) throw new Error('StepArena.advanceTo: the step outgrew the arena');
    if (position > this.chunks[0].bytes) throw new RangeError(`StepArena.advanceTo: position ${position} is past the arena's ${this.chunks[0].bytes} bytes`);
    if (position <= this.offset) return;
    this.usedThisStep += position - this.offset;
    this.offset = position;
  }

  alloc(bytes: number): DevicePtr {
    const size = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    let chunk = this.chunks[this.chunks.length - 1];
    if (this.offset + size > chunk.bytes) {
      chunk = { ptr: this.memory.alloc(Math.max(size, chunk.bytes)), bytes: Math.max(size, chunk.bytes) };
      this.chunks.push(chunk);
      this.offset = 0;
    }
    const ptr = chunk.ptr + this.offset;
    this.offset += size;
    this.usedThisStep += size;
    return ptr;
  }

  dispose(): void {
    for (const chunk of this.chunks) this.memory.free(chunk.ptr);
    this.chunks = [];
  }
}
