import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pdlFromEnv } from './cuda-backend.ts';

// KEEL_PDL=0 switches programmatic dependent launch off (to compare, or to rule it out) without a
// code change; a typo must not silently change it.

test('KEEL_PDL is on unless 0, and anything but 0 or 1 is an error naming it', () => {
  assert.equal(pdlFromEnv({}), true);
  assert.equal(pdlFromEnv({ KEEL_PDL: '' }), true);
  assert.equal(pdlFromEnv({ KEEL_PDL: '0' }), false);
  assert.equal(pdlFromEnv({ KEEL_PDL: '1' }), true);
  assert.throws(() => pdlFromEnv({ KEEL_PDL: 'on' }), /KEEL_PDL must be '0' or '1', not 'on'/);
});
