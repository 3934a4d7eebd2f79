import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CudaDevice, type Kernel } from '../../../src/backend/cuda/cuda-device.ts';
import type { DevicePtr } from '../../../src/backend/cuda/driver-api.ts';
import { launchGemv } from '../../../src/backend/cuda/kernels/gemv.ts';
import { launchAddInto } from '../../../src/backend/cuda/kernels/add-into.ts';
import { launchAddRmsNorm } from '../../../src/backend/cuda/kernels/norm.ts';
import { floatToBf16Bits } from '../../../src/tensor/host-dtype.ts';
import { seededRng } from '../../../src/tensor/seeded-rng.ts';
import { testSeed } from '../../helpers/gpu-test-support.ts';

// Programmatic dependent launch (KEEL_PDL=1): on compute capability >= 9.0 a kernel that begins
// with PDL_PROLOGUE() may start while the kernel before it runs. First the mechanism, with two
// kernels that read %globaltimer: the dependent is resident before its primary ends only with PDL,
// and after its wait it sees what the primary wrote; eager and in a captured graph. Then a chain of
// Keel's kernels, cuBLAS GEMMs, a copy and a memset that read what the one before wrote and
// overwrite what it read: the same bits with PDL on and off, eager and replayed.

const probe = new CudaDevice(0);
const hopper = probe.info.computeCapability.major >= 9;
probe.dispose();
const skip = hopper ? false : 'programmatic dependent launch needs compute capability 9.0';

// The dependent reads the clock before its wait, so its start shows whether it overlapped.
const TIMING_SOURCE = `
__device__ __forceinline__ unsigned long long now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
extern "C" __global__ void primary_kernel(unsigned long long* times, int* value, long long spin_ns) {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" :::);
  const unsigned long long start = now();
  while (now() - start < (unsigned long long)spin_ns) {}
  *value = 42;
  times[0] = now();
}
extern "C" __global__ void dependent_kernel(unsigned long long* times, const int* value, int* seen) {
  const unsigned long long start = now();
  asm volatile("griddepcontrol.wait;" ::: "memory");
  times[1] = start;
  *seen = *value;
}`;
const SPIN_NS = 2_000_000;

function timingKernels(device: CudaDevice): { module: bigint; primary: Kernel; dependent: Kernel } {
  const module = device.driver.loadModule(device.nvrtc.compile('pdl-timing.cu', TIMING_SOURCE, [], [`-arch=${device.info.arch}`]));
  const kernel = (name: string, signature: string): Kernel => ({ name, handle: device.driver.getFunction(module, name), signature, programmatic: true });
  return { module, primary: kernel('primary_kernel', 'ppl'), dependent: kernel('dependent_kernel', 'ppp') };
}

test('with PDL the dependent kernel is resident before its primary ends and sees its write after the wait', { skip }, () => {
  for (const programmaticLaunch of [false, true]) {
    const device = new CudaDevice(0, { programmaticLaunch });
    try {
      assert.equal(device.programmaticLaunch, programmaticLaunch);
      const { module, primary, dependent } = timingKernels(device);
      const times = device.alloc(16);
      const ints = device.alloc(8);
      const run = () => {
        device.launch(primary, [1], [32], 0, [times, ints, SPIN_NS]);
        device.launch(dependent, [1], [32], 0, [times, ints, ints + 4]);
      };
      const check = (how: string) => {
        const timeBytes = new Uint8Array(16);
        const v = new Int32Array(2);
        device.download(timeBytes, times);
        device.download(v, ints);
        const t = new BigUint64Array(timeBytes.buffer);
        assert.equal(v[1], 42, `${how}: the dependent saw the primary's write`);
        const startMinusEnd = Number(t[1] - t[0]) / 1000;
        if (programmaticLaunch) assert.ok(t[1] < t[0], `${how}: with PDL the dependent started ${startMinusEnd} µs after the primary ended`);
        else assert.ok(t[1] >= t[0], `${how}: without PDL the dependent started ${-startMinusEnd} µs before the primary ended`);
        console.log(`PDL ${programmaticLaunch ? 'on' : 'off'}, ${how}: dependent start − primary end = ${startMinusEnd.toFixed(1)} µs`);
      };
      device.fillBytes(ints, 0, 8);
      run();
      check('eager');
      const graph = device.captureGraph(run);
      try {
        device.fillBytes(ints, 0, 8);
        graph.replay();
        check('graph');
      } finally {
        graph.dispose();
      }
      device.free(times);
      device.free(ints);
      device.driver.unloadModule(module);
    } finally {
      device.dispose();
    }
  }
});

const HIDDEN = 4096;
const LAYERS = 6;

function randomBf16(rng: () => number, n: number, scale: number): Uint16Array {
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) out[i] = floatToBf16Bits((rng() * 2 - 1) * scale);
  return out;
}

/** The chain's output (the residual and the last layer's output, bf16 bits) with PDL on or off, eager or replayed. */
function runChain(programmaticLaunch: boolean, replay: boolean, seed: number): Uint16Array {
  const device = new CudaDevice(0, { programmaticLaunch });
  const owned: DevicePtr[] = [];
  const upload = (data: Uint16Array) => {
    const ptr = device.alloc(data.byteLength);
    owned.push(ptr);
    device.uploadSync(ptr, data);
    return ptr;
  };
  try {
    const rng = seededRng(seed);
    const x0 = randomBf16(rng, HIDDEN, 1);
    const r0 = randomBf16(rng, HIDDEN, 1);
    const norm = upload(randomBf16(rng, HIDDEN, 1));
    const gemvW = upload(randomBf16(rng, HIDDEN * HIDDEN, 0.03));
    const gemmW = upload(randomBf16(rng, HIDDEN * HIDDEN, 0.03));
    const [x, residual, h, y, copy] = [x0, r0, x0, x0, x0].map((init) => upload(init));
    const layers = () => {
      for (let l = 0; l < LAYERS; l++) {
        launchAddRmsNorm(device, h, residual, x, norm, 1, HIDDEN, 1e-6); // residual += x; h = norm(residual)
        launchGemv(device, x, h, gemvW, 0, 1, HIDDEN, HIDDEN); // overwrites x, read by the launch before
        device.fillBytes(y, 0, 2 * HIDDEN); // a memset node between kernels
        device.cublas.linearBf16(y, h, gemmW, 1, HIDDEN, HIDDEN); // a library kernel, not launched with PDL
        launchAddInto(device, x, y, 0, 1, HIDDEN); // x += y: reads both kernels' outputs
        device.copyAsync(copy, x, 2 * HIDDEN); // a copy node
        launchAddInto(device, x, copy, 0, 1, HIDDEN); // x doubled
      }
    };
    const reset = () => {
      device.uploadSync(x, x0);
      device.uploadSync(residual, r0);
    };
    if (replay) {
      const graph = device.captureGraph(layers);
      try {
        reset();
        graph.replay();
        device.synchronize();
      } finally {
        graph.dispose();
      }
    } else {
      reset();
      layers();
    }
    const residualOut = new Uint16Array(HIDDEN);
    const xOut = new Uint16Array(HIDDEN);
    device.download(residualOut, residual);
    device.download(xOut, x);
    return Uint16Array.from([...residualOut, ...xOut]);
  } finally {
    for (const ptr of owned) device.free(ptr);
    device.dispose();
  }
}

test('a chain of dependent kernels, GEMMs, copies and memsets gives the same bits with PDL on and off, eager and replayed', { skip }, () => {
  const seed = testSeed('programmatic launch chain');
  const reference = runChain(false, false, seed);
  const finite = reference.filter((bits) => (bits & 0x7f80) !== 0x7f80);
  assert.equal(finite.length, reference.length, 'every output is finite');
  assert.ok(reference.some((bits) => (bits & 0x7fff) !== 0), 'the chain computed something');
  for (const [pdl, replay] of [
    [false, true],
    [true, false],
    [true, true],
  ]) {
    assert.deepEqual(runChain(pdl, replay, seed), reference, `PDL ${pdl ? 'on' : 'off'}, ${replay ? 'replayed' : 'eager'}`);
  }
});
