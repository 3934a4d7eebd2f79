import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeBatch } from '../../step/batch.ts';
import { planAttention } from './attention-plan.ts';
import { MLA_EXPANSION_BLOCK, MLA_EXPANSION_MIN_CHUNK, planMlaExpansion } from './mla-expansion-plan.ts';

// The expansion's plan on the host: which chunks run expanded, where their contexts lie in the
// scratch, the block tables the wgmma kernel reads them through, and how the step's tiles part.

const BLOCK_SIZE = 16;
/** Sequences of `cached` tokens running `query` more, each in blocks of its own. */
const planOf = (specs: { cached: number; query: number }[]) => {
  let nextBlock = 0;
  const chunks = specs.map(({ cached, query }) => {
    const blocks = Array.from({ length: Math.ceil((cached + query) / BLOCK_SIZE) }, () => nextBlock++);
    return { tokens: Array.from({ length: query }, (_, i) => i + 1), startPos: cached, blockTables: [blocks] };
  });
  const batch = describeBatch(chunks, BLOCK_SIZE);
  return { plan: planMlaExpansion(batch, planAttention(batch)), attention: planAttention(batch) };
};

test('each long chunk gets its whole context in scratch blocks of its own; decodes and short chunks none', () => {
  const { plan } = planOf([{ cached: 100, query: 80 }, { cached: 500, query: 1 }, { cached: 0, query: MLA_EXPANSION_MIN_CHUNK }, { cached: 9, query: 40 }]);
  assert.ok(plan !== null);
  // 180 keys take 3 blocks of 64, 64 keys one; sequences 1 (a decode) and 3 (40 tokens) none.
  assert.equal(plan.maxBlocks, 3);
  assert.equal(plan.rows, 4 * MLA_EXPANSION_BLOCK);
  assert.deepEqual([...plan.blocks], [0, 0, 0, 64, 0, 128, 2, 0]);
  assert.deepEqual([...plan.tables], [0, 1, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0]);
});

test("the step's tiles part between the forms: the long chunks' wide tiles, the short chunks' 64-row tiles", () => {
  const { plan, attention } = planOf([{ cached: 0, query: 300 }, { cached: 20, query: 1 }, { cached: 0, query: 40 }, { cached: 50, query: 129 }]);
  assert.ok(plan !== null);
  const seqsOf = (tiles: Int32Array) => [...tiles].filter((_, i) => i % 2 === 0);
  // 300 rows: 3 tiles of 128; 129 rows: 2; the 40-token chunk one 64-row tile.
  assert.deepEqual(seqsOf(plan.wideTiles).sort(), [0, 0, 0, 3, 3]);
  assert.deepEqual([...plan.absorbedTiles], [2, 0]);
  // In planAttention's order (longest-running first), nothing else dropped.
  assert.deepEqual([...plan.wideTiles], [...attention.wideTiles].filter((_, i, all) => all[i - (i % 2)] !== 2));
});

test('no plan for a step of decodes and short chunks alone', () => {
  assert.equal(planOf([{ cached: 100, query: 1 }, { cached: 7, query: 1 }]).plan, null);
  assert.equal(planOf([{ cached: 0, query: 30 }, { cached: 40, query: MLA_EXPANSION_MIN_CHUNK - 1 }]).plan, null);
});
