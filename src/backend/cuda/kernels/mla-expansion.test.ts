import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mlaExpansionBytes } from './mla-expansion.ts';
import { prefillWgmmaSharedBytes } from './prefill-attention.ts';

// The expansion's scratch and shared-memory sizes as the host computes them.

test("scratch bytes: latents, then every head's keys (nope + rope) and values", () => {
  const v2Lite = { numHeads: 16, latentDim: 512, ropeDim: 64, nopeDim: 128, scale: 1 };
  assert.equal(mlaExpansionBytes(64, v2Lite, 128), 2 * 64 * (512 + 16 * (192 + 128)));
});

test("the wgmma kernel's shared memory with keys of 192 and values of 128 fits Hopper's 227 KB", () => {
  // Q 128 x 256, two stages of 64-key K tiles 256 wide and V tiles 128 wide, slack and barriers.
  assert.equal(prefillWgmmaSharedBytes(192, 128), 1024 + 128 * 256 * 2 + 2 * 64 * (256 + 128) * 2 + 8 * 9);
  assert.ok(prefillWgmmaSharedBytes(192, 128) <= 227 * 1024);
});
