import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { KvCache, Tensor } from '../../../src/backend/backend.ts';
import { CpuBackend } from '../../../src/backend/cpu/cpu-backend.ts';
import type { CpuKvCache } from '../../../src/backend/cpu/cpu-tensor.ts';
import { CudaBackend } from '../../../src/backend/cuda/cuda-backend.ts';
import type { CudaKvCache } from '../../../src/backend/cuda/cuda-tensor.ts';
import { BlockAssignment, bf16Tensor, bf16Value, buildBatch, randomBf16Values, ropeTables, seededRng } from '../../../src/bench/synthetic-batch.ts';
import { attentionLayout, plainAttention } from '../../helpers/kv-layout.ts';
import { randInt, relativeError, testSeed } from '../../helpers/gpu-test-support.ts';

// Swapping KV blocks to pinned host memory and back (kv-swap.ts) against the CPU backend's twin:
// the copies on the transfer stream must wait for the writes queued before them, and the writes
// queued after a swap-out must wait for it. Nothing here synchronizes between those ops.

const rng = seededRng(testSeed('cuda swap'));
const gpu = new CudaBackend({ arenaBytes: 64 * 1024 * 1024 });
const cpu = new CpuBackend();
after(() => gpu.dispose());

const SPEC = { numLayers: 3, numBlocks: 40, blockSize: 16, numKvHeads: 2, headDim: 64 };
const ATTN = plainAttention({ numHeads: 4, numKvHeads: 2, headDim: 64, scale: 0.125, slidingWindow: null });
const WIDTH = SPEC.blockSize * SPEC.numKvHeads * SPEC.headDim;

/** Writes `tokens` rows of fresh random keys and values at the start of `table` in every layer of both caches. */
function writeKv(caches: { cpu: KvCache; gpu: KvCache }, rope: { cpu: Tensor; gpu: Tensor }, blocks: BlockAssignment, tokens: number): void {
  const batch = buildBatch([{ cached: 0, query: tokens }], blocks, SPEC.blockSize);
  const steps = [cpu.beginStep(batch), gpu.beginStep(batch)] as const;
  const width = (ATTN.numHeads + 2 * ATTN.numKvHeads) * ATTN.headDim;
  const values = randomBf16Values(rng, tokens * width, 1);
  const table = { cpu: cpu.loadWeight(bf16Tensor([tokens, width], values)), gpu: gpu.loadWeight(bf16Tensor([tokens, width], values)) };
  for (let layer = 0; layer < SPEC.numLayers; layer++) {
    cpu.ropeAndCacheWrite(cpu.embedding(table.cpu, steps[0], 1, 0), rope.cpu, caches.cpu, layer, steps[0], ATTN);
    gpu.ropeAndCacheWrite(gpu.embedding(table.gpu, steps[1], 1, 0), rope.gpu, caches.gpu, layer, steps[1], ATTN);
  }
}

function readBf16Block(ptr: number): Float32Array {
  const bits = new Uint16Array(WIDTH);
  gpu.device.download(bits, ptr);
  return Float32Array.from(bits, (b) => bf16Value(b));
}

/** Every pool's block `block` on the GPU and the CPU, as floats. */
function blockContents(caches: { cpu: KvCache; gpu: KvCache }, block: number): { gpu: Float32Array[]; cpu: Float32Array[] } {
  const kvGpu = caches.gpu as CudaKvCache;
  const kvCpu = caches.cpu as CpuKvCache;
  const out = { gpu: [] as Float32Array[], cpu: [] as Float32Array[] };
  for (let layer = 0; layer < SPEC.numLayers; layer++) {
    out.gpu.push(readBf16Block(kvGpu.keys(layer) + block * WIDTH * 2), readBf16Block(kvGpu.values(layer) + block * WIDTH * 2));
    out.cpu.push(kvCpu.pools[layer][0].codes.slice(block * WIDTH, (block + 1) * WIDTH) as Float32Array, kvCpu.pools[layer][1].codes.slice(block * WIDTH, (block + 1) * WIDTH) as Float32Array);
  }
  return out;
}

test('blocks swapped out right after they are written, overwritten at once, then swapped into other blocks hold what was written, as on the CPU', () => {
  const layout = attentionLayout(SPEC);
  const caches = { cpu: cpu.createKvCache(layout), gpu: gpu.createKvCache(layout) };
  const swapLayout = { ...layout, numBlocks: 24 };
  const swaps = { cpu: cpu.createSwapSpace(swapLayout), gpu: gpu.createSwapSpace(swapLayout) };
  const rope = { cpu: cpu.uploadRopeTable(ropeTables(512, 64)), gpu: gpu.uploadRopeTable(ropeTables(512, 64)) };
  const blocks = new BlockAssignment(rng, SPEC.numBlocks, 1);
  const tokens = randInt(rng, 5, 8) * SPEC.blockSize;
  writeKv(caches, rope, blocks, tokens);
  const written = blocks.tables[0];
  const before = written.map((block) => blockContents(caches, block).gpu);

  // Host blocks in a run and out of order, so that both coalesced and single copies run.
  const host = Int32Array.from(written, (_, i) => (i < 3 ? 10 + i : 23 - i));
  for (const b of ['cpu', 'gpu'] as const) (b === 'cpu' ? cpu : gpu).swapOut(caches[b], swaps[b], Int32Array.from(written), host);
  // Queued right after the swap-out: it must not land before the swap-out has read the blocks.
  writeKv(caches, rope, blocks, tokens);

  const unused = Array.from({ length: SPEC.numBlocks }, (_, i) => i).filter((b) => !written.includes(b));
  const targets = Int32Array.from(unused.slice(0, written.length));
  for (const b of ['cpu', 'gpu'] as const) {
    const backend = b === 'cpu' ? cpu : gpu;
    backend.swapIn(caches[b], swaps[b], host, targets);
    backend.awaitSwapIns();
  }
  targets.forEach((block, i) => {
    const { gpu: got, cpu: twin } = blockContents(caches, block);
    got.forEach((pool, p) => {
      assert.deepEqual(pool, before[i][p], `pool ${p}: block ${written[i]} -> host ${host[i]} -> block ${block}`);
      const err = relativeError(pool, twin[p]);
      assert.ok(err < 1e-2, `pool ${p}: block ${block} vs the CPU backend (bf16 against float32): ${err}`);
    });
  });
});

test('a swap space belongs to its cache layout, and pairs must name blocks inside both', () => {
  const layout = attentionLayout(SPEC);
  const cache = gpu.createKvCache(layout);
  const swap = gpu.createSwapSpace({ ...layout, numBlocks: 4 });
  assert.throws(() => gpu.swapOut(cache, swap, Int32Array.of(0), Int32Array.of(4)), /outside/);
  assert.throws(() => gpu.swapIn(cache, swap, Int32Array.of(0), Int32Array.of(SPEC.numBlocks)), /outside/);
  const other = gpu.createSwapSpace({ ...attentionLayout({ ...SPEC, numLayers: 2 }), numBlocks: 4 });
  assert.throws(() => gpu.swapOut(cache, other, Int32Array.of(0), Int32Array.of(0)), /another cache layout/);
});
