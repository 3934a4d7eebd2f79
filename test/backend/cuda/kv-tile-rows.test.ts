import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

// kv-tile-rows.cuh compiled for the host: for every tile shape the kernels stage (and the shapes
// around them), each copy of round i must find, in the lane the header names, the slot of its own
// row c / CHUNKS, and a warp's lanes must look up distinct rows of the tile. A wrong lane would copy
// another key's row, which only a GPU run would show otherwise.

const KERNELS = fileURLToPath(new URL('../../../src/backend/cuda/kernels/', import.meta.url));

const CHECK_PROGRAM = (shapes: [number, number, number][]) => `
#include <cstdio>
#include "kv-tile-rows.cuh"

template <int TILE_ROWS, int CHUNKS, int THREADS>
void check() {
  using Rows = KvTileRows<TILE_ROWS, CHUNKS, THREADS>;
  int errors = 0;
  if (Rows::BY_LANE) {
    for (int t = 0; t < THREADS; t++) {
      for (int i = 0; i < Rows::ROUNDS; i++) {
        const int lane = Rows::source_lane(t, i);
        const int want = (t + i * THREADS) / CHUNKS;
        if (lane < 0 || lane > 31 || Rows::lane_row(t, lane) != want) errors++;
      }
    }
    for (int w = 0; w < THREADS; w += 32) {
      bool seen[TILE_ROWS] = {};
      for (int lane = 0; lane < 32; lane++) {
        const int r = Rows::lane_row(w + lane, lane);
        if (r < -1 || r >= TILE_ROWS || (r >= 0 && seen[r])) errors++;
        if (r >= 0) seen[r] = true;
      }
    }
  }
  std::printf("{\\"shape\\": [%d, %d, %d], \\"byLane\\": %s, \\"errors\\": %d}\\n", TILE_ROWS, CHUNKS, THREADS, Rows::BY_LANE ? "true" : "false", errors);
}

int main() {
${shapes.map(([r, c, t]) => `  check<${r}, ${c}, ${t}>();`).join('\n')}
}
`;

const skip = spawnSync('g++', ['--version'], { stdio: 'ignore' }).status === 0 ? false : 'no g++';

test('every staged copy takes its own row’s slot from the lane that looked it up', { skip }, () => {
  const shapes: [number, number, number][] = [];
  for (const rows of [16, 32, 64, 128]) for (const chunks of [1, 2, 4, 8, 10, 12, 16, 20, 32, 64]) for (const threads of [64, 128, 256]) shapes.push([rows, chunks, threads]);
  const dir = mkdtempSync(join(tmpdir(), 'keel-kv-tile-rows-'));
  try {
    writeFileSync(join(dir, 'check.cpp'), CHECK_PROGRAM(shapes));
    execFileSync('g++', ['-std=c++17', `-I${KERNELS}`, '-o', join(dir, 'check'), join(dir, 'check.cpp')]);
    const results = execFileSync(join(dir, 'check'), { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { shape: number[]; byLane: boolean; errors: number });
    assert.equal(results.length, shapes.length);
    for (const r of results) assert.equal(r.errors, 0, `shape ${r.shape.join(' × ')}`);
    const byLane = (shape: readonly number[]) => results.find((r) => r.shape.join() === shape.join())?.byLane;
    // The kernels' own tiles take the shuffled slots: decode (64 × 16 and 32 × 16 at head dim 128),
    // the legacy prefill (64 × 16), the Hopper prefill's loader (128 × 16 and, at 256, 64 × 32).
    for (const shape of [[64, 16, 128], [32, 16, 128], [64, 8, 128], [64, 2, 128], [128, 16, 128], [64, 32, 128], [128, 8, 128]]) {
      assert.equal(byLane(shape), true, `${shape.join(' × ')} uses the lanes`);
    }
    // Rows of 12 or 64 chunks do not split into whole rows a warp-round: looked up per copy.
    assert.equal(byLane([64, 12, 128]), false);
    assert.equal(byLane([16, 64, 128]), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
