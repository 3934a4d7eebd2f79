import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { kernelPrologues, PDL_PROLOGUE } from './kernel-prologue.ts';

// With KEEL_PDL=1 a kernel whose body does not begin with PDL_PROLOGUE() would read its inputs
// while the kernel before it still writes them. CudaDevice only launches a kernel with PDL where
// kernelPrologues finds the prologue, and every kernel of the tree is expected to have it.

const KERNEL_DIR = new URL('./kernels/', import.meta.url);

test('kernelPrologues finds the prologue as the first statement only', () => {
  const source = `
extern "C" __global__ void first_kernel(int* __restrict__ out, const float* x) {
  PDL_PROLOGUE();
  out[0] = 1;
}
extern "C" __global__ void __launch_bounds__(256, 2) bounded_kernel(int* out,
                                                                    int n) {
  // Why it waits first.
  /* a block comment */
  PDL_PROLOGUE();
}
extern "C" __global__ void late_kernel(int* out) {
  __shared__ int s[32];
  PDL_PROLOGUE();
}
extern "C" __global__ void missing_kernel(int* out) {
  out[0] = 1;
}
extern "C" __global__ void commented_kernel(int* out) {
  // PDL_PROLOGUE();
  out[0] = 1;
}
extern "C" __global__ void CLUSTER_DIMS __launch_bounds__(128) clustered_kernel(int* out) {
  PDL_PROLOGUE();
}
extern "C" __global__ void prefetching_kernel(int* out, const int* w) {
  PDL_PREFETCH(prefetch_rows(w, f(1, 2)));
  // and a second
  PDL_PREFETCH(prefetch_l2(w));
  PDL_PROLOGUE();
}
extern "C" __global__ void loading_kernel(int* out, const int* w) {
  const int v = w[0];
  PDL_PROLOGUE();
}
extern "C" __global__ void unterminated_kernel(int* out, const int* w) {
  PDL_PREFETCH(prefetch_l2(w)) PDL_PROLOGUE();
}`;
  assert.deepEqual(
    [...kernelPrologues(source)],
    [
      ['first_kernel', true],
      ['bounded_kernel', true],
      ['late_kernel', false],
      ['missing_kernel', false],
      ['commented_kernel', false],
      ['clustered_kernel', true],
      ['prefetching_kernel', true],
      ['loading_kernel', false],
      ['unterminated_kernel', false],
    ],
  );
});

test('every kernel of the tree begins with PDL_PROLOGUE()', () => {
  const common = readFileSync(new URL('common.cuh', KERNEL_DIR), 'utf8');
  assert.match(common, /#define PDL_PROLOGUE\(\)/, 'common.cuh defines the macro');
  let kernels = 0;
  for (const file of readdirSync(KERNEL_DIR).filter((f) => f.endsWith('.cu') || f.endsWith('.cuh'))) {
    const source = readFileSync(new URL(file, KERNEL_DIR), 'utf8');
    const prologues = kernelPrologues(source);
    // Every __global__ is one the parser recognizes, so none escapes this check.
    assert.equal(prologues.size, (source.match(/__global__/g) ?? []).length, `${file}: a __global__ declared in a shape kernelPrologues does not parse`);
    for (const [name, has] of prologues) assert.ok(has, `${file}: ${name} does not begin with ${PDL_PROLOGUE}`);
    if (prologues.size > 0) assert.match(source, /#include "common\.cuh"/, `${file} includes common.cuh`);
    kernels += prologues.size;
  }
  assert.ok(kernels >= 70, `found only ${kernels} kernels`);
});
