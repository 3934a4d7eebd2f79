import { invalidArgument } from '../errors.ts';
import type { ParameterSpec } from '../layers/parameters.ts';

/** Bytes of a layer's weights at 16 bits a parameter: how `--cpu-offload-gb` counts them. */
export function layerBytes(parameters: readonly ParameterSpec[]): number {
  return parameters.reduce((bytes, { shape }) => bytes + 2 * shape.reduce((n, d) => n * d, 1), 0);
}

/**
 * `count` of `numLayers` layers spread evenly (the middle of each of `count` equal runs): resident
 * layers run between offloaded ones, so each offloaded layer's copy overlaps more compute than
 * when the offloaded layers are all at the end.
 */
export function evenlySpaced(numLayers: number, count: number): number[] {
  return Array.from({ length: count }, (_, j) => Math.floor(((j + 0.5) * numLayers) / count));
}

/**
 * The decoder layers whose weights `gib` GiB of host memory holds (weight offload): the most
 * evenly spaced layers whose 16-bit sizes fit. At least one must fit. Each rank of a
 * `tensorParallelSize`-way group holds its own 1/N of a layer (its heads, its MLP columns or
 * experts) and its own `gib`: a layer counts 1/N of its size (norms and replicated key/value heads
 * are counted as split too, the little they add is not).
 */
export function layersToOffload(layers: readonly ParameterSpec[][], gib: number, tensorParallelSize: number): number[] {
  const sizes = layers.map((layer) => layerBytes(layer) / tensorParallelSize);
  const budget = gib * 2 ** 30;
  for (let count = layers.length; count > 0; count--) {
    const chosen = evenlySpaced(layers.length, count);
    if (chosen.reduce((bytes, i) => bytes + sizes[i], 0) <= budget) return chosen;
  }
  const smallest = Math.min(...sizes);
  const perRank = tensorParallelSize > 1 ? ` (a rank's 1/${tensorParallelSize} of it)` : '';
  throw invalidArgument(`cpuOffloadGb ${gib} GiB holds no decoder layer (the smallest has ${(smallest / 2 ** 30).toFixed(3)} GiB of 16-bit weights${perRank})`);
}
