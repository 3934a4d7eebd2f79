import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlockAssignment, buildBatch, seededRng } from '../../../bench/synthetic-batch.ts';
import { MLA_EXPANSION_BLOCK, MLA_EXPANSION_MIN_CHUNK, planMlaExpansion } from '../mla-expansion-plan.ts';
import { mlaExpansionBytes } from './mla-expansion.ts';
import { prefillWgmmaSharedBytes } from './prefill-attention.ts';

// The expansion's scratch plan on the host: which sequences' contexts are laid out where, and the
// block tables the wgmma kernel reads them through.

const rng = seededRng(7);
const batchOf = (specs: { cached: number; query: number }[]) => buildBatch(specs, new BlockAssignment(rng, 400, specs.length), 16);

test('each chunk gets its whole context in scratch blocks of its own; decodes get none', () => {
  const plan = planMlaExpansion(batchOf([{ cached: 100, query: 80 }, { cached: 500, query: 1 }, { cached: 0, query: 64 }]));
  assert.ok(plan !== null);
  // 180 keys take 3 blocks of 64, 64 keys one.
  assert.equal(plan.maxBlocks, 3);
  assert.equal(plan.rows, 4 * MLA_EXPANSION_BLOCK);
  assert.deepEqual([...plan.blocks], [0, 0, 0, 64, 0, 128, 2, 0]);
  assert.deepEqual([...plan.tables], [0, 1, 2, 0, 0, 0, 3, 0, 0]);
});

test('no plan for a step of decodes alone, or with a chunk too short to pay for its projection', () => {
  assert.equal(planMlaExpansion(batchOf([{ cached: 100, query: 1 }, { cached: 7, query: 1 }])), null);
  assert.equal(planMlaExpansion(batchOf([{ cached: 0, query: 300 }, { cached: 40, query: MLA_EXPANSION_MIN_CHUNK - 1 }])), null);
});

test("scratch bytes: latents, then every head's keys (nope + rope) and values", () => {
  const v2Lite = { numHeads: 16, latentDim: 512, ropeDim: 64, nopeDim: 128, scale: 1 };
  assert.equal(mlaExpansionBytes(64, v2Lite, 128), 2 * 64 * (512 + 16 * (192 + 128)));
});

test("the wgmma kernel's shared memory with keys of 192 and values of 128 fits Hopper's 227 KB", () => {
  // Q 128 x 256, two stages of 64-key K tiles 256 wide and V tiles 128 wide, slack and barriers.
  assert.equal(prefillWgmmaSharedBytes(192, 128), 1024 + 128 * 256 * 2 + 2 * 64 * (256 + 128) * 2 + 8 * 9);
  assert.ok(prefillWgmmaSharedBytes(192, 128) <= 227 * 1024);
});
