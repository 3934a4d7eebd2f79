import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GPTQ_BLOCK } from '../backend/cuda/kernels/gptq.ts';
import { blockColumns } from './gptq-cuda.ts';

// gptq_block_kernel fits a group's grid from registers when the group ends inside its block, and
// from the weights in memory (current only at a block's start) when it runs past: every group
// that runs past its block must begin it.
test('blockColumns: no group begins inside a block and ends past it; blocks are at most GPTQ_BLOCK wide', () => {
  for (const cols of [64, 320, 4096, 14336, 11008]) {
    for (let groupSize = 1; groupSize <= cols + 1; groupSize += groupSize < 300 ? 1 : 997) {
      const size = Math.min(groupSize, cols);
      const block = blockColumns(size, cols);
      assert.ok(block >= 1 && block <= GPTQ_BLOCK, `group ${size}, cols ${cols}: block ${block}`);
      for (let start = 0; start < cols; start += block) {
        const end = Math.min(cols, start + block);
        for (let g = Math.ceil(start / size) * size; g < end; g += size) {
          if (Math.min(cols, g + size) > end) assert.equal(g, start, `group ${size}, cols ${cols}: the group at ${g} runs past block [${start}, ${end})`);
        }
      }
    }
  }
  assert.equal(blockColumns(128, 4096), GPTQ_BLOCK, 'group 128 takes whole blocks');
  assert.equal(blockColumns(4096, 4096), GPTQ_BLOCK, 'one group a row takes whole blocks');
});
