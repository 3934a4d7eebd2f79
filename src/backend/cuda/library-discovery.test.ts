import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { libraryCandidates, openLibrary, wheelLibraryDirs } from './library-discovery.ts';

function touch(path: string): void {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, '');
}

test('candidates: CUDA_HOME first, then the loader soname, then pip wheels', () => {
  const root = mkdtempSync(join(tmpdir(), 'keel-discovery-'));
  try {
    touch(join(root, 'cuda/lib64/libnvrtc.so.13'));
    touch(join(root, 'cuda/targets/x86_64-linux/lib/libnvrtc.so.12'));
    touch(join(root, 'site/nvidia/cu13/lib/libnvrtc.so.13'));
    touch(join(root, 'site/nvidia/cublas/lib/libcublas.so.13'));
    const env = { cudaHome: join(root, 'cuda'), sitePackages: () => [join(root, 'site')] };
    const nvrtc = libraryCandidates('nvrtc', env).filter((c) => c.source !== 'toolkit');
    assert.deepEqual(nvrtc, [
      { path: join(root, 'cuda/lib64/libnvrtc.so.13'), source: 'CUDA_HOME' },
      { path: join(root, 'cuda/targets/x86_64-linux/lib/libnvrtc.so.12'), source: 'CUDA_HOME' },
      { path: 'libnvrtc.so.13', source: 'loader' },
      { path: 'libnvrtc.so.12', source: 'loader' },
      { path: join(root, 'site/nvidia/cu13/lib/libnvrtc.so.13'), source: 'pip wheel' },
    ]);
    assert.deepEqual(wheelLibraryDirs([join(root, 'site'), join(root, 'missing')]).sort(), [
      join(root, 'site/nvidia/cu13/lib'),
      join(root, 'site/nvidia/cublas/lib'),
    ]);
  } finally {
    rmSync(root, { recursive: true });
  }
});

test('a library that no candidate provides reports every failure instead of throwing', () => {
  const result = openLibrary('cublasLt', { cudaHome: '/nonexistent', sitePackages: () => [] });
  if ('failures' in result) {
    assert.ok(result.failures.some((f) => f.includes('libcublasLt.so.13')));
  } else {
    assert.match(result.path, /libcublasLt\.so/);
  }
});
