import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mlaDecodeRowTiles, mlaDecodeSharedBytes } from './mla-decode.ts';

// mla_decode_kernel compiles for MT = 1, 2 or 4 row tiles and needs its whole working set in shared
// memory: these pin the host's view of both, which the launch must agree with.

test('mla decode row tiles: as few 16-head tiles as hold the heads, 3 rounded up to 4, at most 4', () => {
  const cases: [number, number][] = [[1, 1], [8, 1], [16, 1], [17, 2], [32, 2], [33, 4], [48, 4], [64, 4], [128, 4]];
  for (const [heads, tiles] of cases) assert.equal(mlaDecodeRowTiles(heads), tiles, `${heads} heads`);
});

test("mla decode shared memory: DeepSeek's 512 + 64 fits Hopper's 227 KB per block at every row-tile count", () => {
  const hopperOptin = 227 * 1024;
  // Q rows + two 64-row KV stages of 1,152 bytes (72 swizzled chunks), P rows of 128 bytes, and the
  // row reductions (8 / MT warps per row).
  assert.equal(mlaDecodeSharedBytes(512, 64, 4), (64 + 128) * 1152 + 64 * 128 + 2 * 64 * 4);
  assert.equal(mlaDecodeSharedBytes(512, 64, 1), (16 + 128) * 1152 + 16 * 128 + 8 * 16 * 4);
  for (const tiles of [1, 2, 4]) assert.ok(mlaDecodeSharedBytes(512, 64, tiles) <= hopperOptin, `${tiles} row tiles`);
  // A row width that is not a multiple of 8 chunks is padded by one chunk (432 values: 54 + 1 chunks).
  assert.equal(mlaDecodeSharedBytes(384, 48, 1), (16 + 128) * 55 * 16 + 16 * 128 + 8 * 16 * 4);
});
