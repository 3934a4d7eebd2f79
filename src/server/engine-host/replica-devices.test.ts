import assert from 'node:assert/strict';
import { test } from 'node:test';
import { replicaDevices } from './replica-devices.ts';

test('each replica gets its own run of consecutive GPUs, of those the driver reports or CUDA_VISIBLE_DEVICES names', () => {
  assert.deepEqual(replicaDevices(undefined, 8, 4, 2), ['0,1', '2,3', '4,5', '6,7']);
  assert.deepEqual(replicaDevices(undefined, 8, 2, 1), ['0', '1'], 'GPUs left over stay unused');
  assert.deepEqual(replicaDevices('3, 5,GPU-aa,7', 4, 2, 2), ['3,5', 'GPU-aa,7']);
  assert.deepEqual(replicaDevices('', 2, 2, 1), ['0', '1'], 'an empty variable counts as unset');
});

test('fewer visible GPUs than replicas × ranks are refused, naming both counts', () => {
  assert.throws(() => replicaDevices(undefined, 4, 3, 2), /dataParallelSize 3 × 2 GPUs per replica \(tensorParallelSize × pipelineParallelSize\) needs 6 GPUs, and 4 are visible/);
  assert.throws(() => replicaDevices('0', 8, 2, 1), /needs 2 GPUs, and 1 are visible/);
});
