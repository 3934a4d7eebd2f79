import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pdlFromEnv } from './cuda-backend.ts';

// KEEL_PDL switches programmatic dependent launch on for a benchmark without a code change; a
// typo must not silently leave it off.

test('KEEL_PDL is off unless 1, and anything but 0 or 1 is an error naming it', () => {
  assert.equal(pdlFromEnv({}), false);
  assert.equal(pdlFromEnv({ KEEL_PDL: '' }), false);
  assert.equal(pdlFromEnv({ KEEL_PDL: '0' }), false);
  assert.equal(pdlFromEnv({ KEEL_PDL: '1' }), true);
  assert.throws(() => pdlFromEnv({ KEEL_PDL: 'on' }), /KEEL_PDL must be '0' or '1', not 'on'/);
});
