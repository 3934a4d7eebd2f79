/**
 * Host memory bandwidth as a plain JS copy of one large Float32Array into another reaches it
 * (TypedArray.set is a memcpy), counting bytes read and written, best of `repeats`. The arrays
 * are far larger than any CPU cache, so this is DRAM speed: the bound for the CPU backend's decode.
 */
export function measureHostCopyBandwidth(options: { bytes?: number; repeats?: number } = {}): number {
  const elements = Math.floor((options.bytes ?? 256 * 1024 * 1024) / 4);
  const src = new Float32Array(elements).fill(1);
  const dst = new Float32Array(elements);
  // The first copy faults the destination's pages in; it is not timed.
  dst.set(src);
  let best = Infinity;
  for (let i = 0; i < (options.repeats ?? 5); i++) {
    const began = performance.now();
    dst.set(src);
    best = Math.min(best, performance.now() - began);
  }
  return (2 * elements * 4) / (best / 1000);
}
