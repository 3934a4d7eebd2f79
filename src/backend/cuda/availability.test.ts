import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cudaAvailability } from './availability.ts';
import { cudaCallError } from './cuda-error.ts';

test('cudaAvailability never throws and explains a missing GPU', () => {
  const availability = cudaAvailability();
  if (availability.ok) {
    assert.ok(availability.deviceCount > 0 && availability.deviceName.length > 0);
  } else {
    assert.ok(availability.reason.length > 10, availability.reason);
  }
});

test('call errors name the call without its version suffix and the status name', () => {
  const err = cudaCallError('cuMemAlloc_v2', 2, 'CUDA_ERROR_OUT_OF_MEMORY');
  assert.equal(err.message, 'cuMemAlloc failed with CUDA_ERROR_OUT_OF_MEMORY (2)');
  assert.equal(err.kind, 'backend');
});
