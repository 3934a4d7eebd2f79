import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { cudaAvailability, doctorReport } from './availability.ts';
import { CudaDevice } from './cuda-device.ts';
import { KernelCompiler } from './kernel-cache.ts';

// The FFI layer on a real GPU: errors carry the call and code names, NVRTC logs reach the
// message, the compile cache is hit, and availability / doctor data are filled in.

const device = new CudaDevice();
after(() => device.dispose());

test('a failing driver call throws an Error naming the call and the CUresult', () => {
  assert.throws(() => device.alloc(2 ** 50), /cuMemAlloc failed with CUDA_ERROR_OUT_OF_MEMORY \(2\)/);
  const kernel = device.kernel('convert.cu', 'bf16_to_f32_kernel', 'ppl');
  assert.throws(() => device.launch(kernel, [1], [4096], 0, [0, 0, 0]), /cuLaunchKernel failed with CUDA_ERROR_INVALID_VALUE/);
  // The context survives both: a later allocation works.
  device.free(device.alloc(1024));
});

test('an NVRTC compile error throws with the compiler log', () => {
  assert.throws(
    () => device.nvrtc.compile('broken.cu', 'extern "C" __global__ void k() { undefined_name(); }', [], [`-arch=${device.info.arch}`]),
    (err: Error) => /nvrtcCompileProgram failed with NVRTC_ERROR_COMPILATION/.test(err.message) && /undefined_name/.test(err.message),
  );
});

test('compiled kernels are cached on disk and reused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-kernels-'));
  try {
    let compiles = 0;
    const counting = {
      version: device.nvrtc.version,
      compile: (...args: Parameters<typeof device.nvrtc.compile>) => {
        compiles++;
        return device.nvrtc.compile(...args);
      },
    };
    const source = 'extern "C" __global__ void k(int* p) { *p = FOO; }';
    const first = new KernelCompiler(counting, device.info.arch, dir).compile('k.cu', source, [], { FOO: 1 });
    const second = new KernelCompiler(counting, device.info.arch, dir).compile('k.cu', source, [], { FOO: 1 });
    assert.equal(compiles, 1);
    assert.deepEqual(new Uint8Array(second), new Uint8Array(first));
    new KernelCompiler(counting, device.info.arch, dir).compile('k.cu', source, [], { FOO: 2 });
    assert.equal(compiles, 2, 'a different define is a different kernel');
    assert.equal(readdirSync(dir).filter((f) => f.endsWith('.cubin')).length, 2);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test('availability and the doctor report describe this GPU', () => {
  const availability = cudaAvailability();
  assert.ok(availability.ok, availability.ok ? '' : availability.reason);
  assert.equal(availability.deviceName, device.info.name);
  const report = doctorReport();
  assert.equal(report.available, true);
  assert.ok(report.gpu !== null && report.gpu.multiprocessors > 0 && report.gpu.memoryTotalBytes > report.gpu.memoryFreeBytes);
  assert.match(report.driverCudaVersion ?? '', /^\d+\.\d+$/);
  assert.match(report.nvrtcVersion ?? '', /^\d+\.\d+$/);
  for (const path of Object.values(report.libraries)) assert.ok(path !== null && existsSync(path), `library file ${path}`);
  console.log(JSON.stringify(report));
});
