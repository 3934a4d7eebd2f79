import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { archForComputeCapability, KernelCompiler, kernelCacheDir, kernelCacheKey } from './kernel-cache.ts';

test('compute capability 9.0 targets sm_90a, others their plain sm', () => {
  assert.equal(archForComputeCapability(9, 0), 'sm_90a');
  assert.equal(archForComputeCapability(8, 9), 'sm_89');
  assert.equal(archForComputeCapability(12, 0), 'sm_120');
});

test('the cache directory follows KEEL_CACHE_DIR', () => {
  assert.equal(kernelCacheDir({ KEEL_CACHE_DIR: '/tmp/k' }), '/tmp/k/kernels');
  assert.match(kernelCacheDir({}), /\.cache\/keel\/kernels$/);
});

test('the key changes with source, headers, arch, options and NVRTC version', () => {
  const v = { major: 13, minor: 0 };
  const base = kernelCacheKey('src', [{ name: 'a.cuh', source: 'x' }], 'sm_90a', ['-DX=1'], v);
  assert.notEqual(kernelCacheKey('src2', [{ name: 'a.cuh', source: 'x' }], 'sm_90a', ['-DX=1'], v), base);
  assert.notEqual(kernelCacheKey('src', [{ name: 'a.cuh', source: 'y' }], 'sm_90a', ['-DX=1'], v), base);
  assert.notEqual(kernelCacheKey('src', [{ name: 'a.cuh', source: 'x' }], 'sm_80', ['-DX=1'], v), base);
  assert.notEqual(kernelCacheKey('src', [{ name: 'a.cuh', source: 'x' }], 'sm_90a', ['-DX=2'], v), base);
  assert.notEqual(kernelCacheKey('src', [{ name: 'a.cuh', source: 'x' }], 'sm_90a', ['-DX=1'], { major: 13, minor: 1 }), base);
  assert.equal(kernelCacheKey('src', [{ name: 'a.cuh', source: 'x' }], 'sm_90a', ['-DX=1'], v), base);
});

test('a cached CUBIN is read back instead of recompiled', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-cache-test-'));
  try {
    const calls: string[][] = [];
    const nvrtc = {
      version: { major: 13, minor: 0 },
      compile: (_name: string, source: string, _h: unknown, options: readonly string[]) => {
        calls.push([...options]);
        return new TextEncoder().encode(`cubin of ${source} ${options.join(' ')}`);
      },
    };
    const a = new KernelCompiler(nvrtc, 'sm_90a', dir).compile('k.cu', 'S', [], { B: 2, A: 1 });
    const b = new KernelCompiler(nvrtc, 'sm_90a', dir).compile('k.cu', 'S', [], { A: 1, B: 2 });
    assert.equal(calls.length, 1);
    assert.deepEqual(calls[0], ['-arch=sm_90a', '-std=c++17', '-DA=1', '-DB=2']);
    assert.deepEqual(new Uint8Array(b), a);
    assert.equal(readdirSync(dir).length, 1);
  } finally {
    rmSync(dir, { recursive: true });
  }
});
