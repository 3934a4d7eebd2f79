import assert from 'node:assert/strict';
import { test } from 'node:test';
import { evenlySpaced, layerBytes, layersToOffload } from './weight-offload.ts';

const layer = (numel: number) => [{ name: 'w', shape: [numel] }];
const GIB = 2 ** 30;

test('evenly spaced layers take the middle of equal runs, never the same layer twice', () => {
  assert.deepEqual(evenlySpaced(32, 8), [2, 6, 10, 14, 18, 22, 26, 30]);
  assert.deepEqual(evenlySpaced(4, 4), [0, 1, 2, 3]);
  assert.deepEqual(evenlySpaced(5, 2), [1, 3]);
  for (let n = 1; n <= 40; n++) {
    for (let k = 1; k <= n; k++) assert.equal(new Set(evenlySpaced(n, k)).size, k, `${k} of ${n}`);
  }
});

test('the most evenly spaced layers whose 16-bit weights fit the budget are offloaded', () => {
  // Eight layers of 0.5 GiB each (2^28 parameters at 2 bytes).
  const layers = Array.from({ length: 8 }, () => layer(2 ** 28));
  assert.equal(layerBytes(layers[0]), GIB / 2);
  assert.deepEqual(layersToOffload(layers, 1, 1), [2, 6]);
  assert.deepEqual(layersToOffload(layers, 1.4, 1), [2, 6], 'whole layers only');
  assert.deepEqual(layersToOffload(layers, 1.5, 1), [1, 4, 6]);
  assert.deepEqual(layersToOffload(layers, 2, 1), [1, 3, 5, 7]);
  assert.deepEqual(layersToOffload(layers, 100, 1), [0, 1, 2, 3, 4, 5, 6, 7]);
});

test('layers of different sizes: the spacing shrinks until the chosen ones fit', () => {
  // A large middle layer: three evenly spaced layers would take it, two do not.
  const layers = [layer(2 ** 27), layer(2 ** 27), layer(2 ** 27), layer(2 ** 30), layer(2 ** 27), layer(2 ** 27)];
  assert.deepEqual(layersToOffload(layers, 1, 1), [1, 4]);
});

test('a budget that holds no layer is an error naming the smallest layer', () => {
  assert.throws(() => layersToOffload([layer(2 ** 28)], 0.25, 1), /cpuOffloadGb 0.25 GiB holds no decoder layer \(the smallest has 0.500 GiB/);
});

test('a rank of a tensor-parallel group counts its 1/N of each layer against its own budget', () => {
  const layers = Array.from({ length: 8 }, () => layer(2 ** 28));
  // 0.25 GiB per layer on each of two ranks: 1 GiB holds four of them.
  assert.deepEqual(layersToOffload(layers, 1, 2), [1, 3, 5, 7]);
  assert.deepEqual(layersToOffload(layers, 1, 2), layersToOffload(layers, 2, 1));
  assert.throws(() => layersToOffload([layer(2 ** 28)], 0.2, 2), /holds no decoder layer \(the smallest has 0.250 GiB of 16-bit weights \(a rank's 1\/2 of it\)\)/);
});
