import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type ArenaMemory, StepArena } from './step-arena.ts';

function fakeMemory() {
  let next = 0x1000_0000;
  const live = new Map<number, number>();
  const memory: ArenaMemory & { live: Map<number, number>; syncs: number } = {
    live,
    syncs: 0,
    alloc(bytes) {
      const ptr = next;
      next += Math.ceil(bytes / 4096) * 4096 + 4096;
      live.set(ptr, bytes);
      return ptr;
    },
    free(ptr) {
      assert.ok(live.delete(ptr), `double free of ${ptr}`);
    },
    synchronize() {
      memory.syncs++;
    },
  };
  return memory;
}

test('the same allocation sequence yields the same addresses after each reset', () => {
  const arena = new StepArena(fakeMemory(), 1 << 20);
  const run = () => [100, 5000, 1, 256, 70000].map((n) => arena.alloc(n));
  const first = run();
  arena.reset();
  assert.deepEqual(run(), first);
  for (const ptr of first) assert.equal(ptr % 256, 0, 'aligned to 256 bytes');
  assert.equal(new Set(first).size, first.length);
});

test('an oversized step spills into chunks, then the next reset merges them into one', () => {
  const memory = fakeMemory();
  const arena = new StepArena(memory, 4096);
  const ptrs = [3000, 3000, 10000].map((n) => arena.alloc(n));
  assert.equal(memory.live.size, 3);
  assert.ok(ptrs[1] !== ptrs[0] && ptrs[2] !== ptrs[1]);
  arena.reset();
  assert.equal(memory.syncs, 1, 'waits for the GPU before freeing');
  assert.equal(memory.live.size, 1);
  assert.ok(arena.capacityBytes >= 3072 + 3072 + 10240);
  const again = [3000, 3000, 10000].map((n) => arena.alloc(n));
  assert.equal(again[1] - again[0], 3072, 'contiguous in the merged chunk');
  arena.dispose();
  assert.equal(memory.live.size, 0);
});

test('advanceTo counts a replayed graph\'s tensors as allocated: the step\'s next tensors come after them', () => {
  const arena = new StepArena(fakeMemory(), 1 << 20);
  // The recording: an upload, then the graph's tensors.
  arena.alloc(512);
  const recorded = [1000, 40000, 3000].map((n) => arena.alloc(n));
  const end = arena.position;
  const afterRecording = arena.alloc(100);
  // A replay allocates nothing but the upload; advanceTo puts the next tensor where it went after the recording.
  arena.reset();
  arena.alloc(512);
  arena.advanceTo(end);
  assert.equal(arena.alloc(100), afterRecording);
  assert.ok(afterRecording >= recorded[2] + 3000);
  arena.advanceTo(0);
  assert.equal(arena.alloc(100), afterRecording + 256, 'never moves back');
  assert.throws(() => arena.advanceTo(2 << 20), /past the arena/);
});
