import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DECODE_TILE_KEYS, decodeSplit, MIN_KEYS_PER_PARTITION } from '../../../src/backend/cuda/attention-plan.ts';

// decode-split.cuh compiled for the host: how one decode spreads its visible keys over the launch's
// partitions. Every key must fall in exactly one used partition (a gap or an overlap would drop or
// double-count keys, which only a GPU run would show otherwise), no more partitions than the launch
// has, whole tiles, ceil(keys / min_keys) partitions where the launch has them, and none but the
// last of min_keys / 2 keys or fewer.

const KERNELS = fileURLToPath(new URL('../../../src/backend/cuda/kernels/', import.meta.url));

const CHECK_PROGRAM = `
#include <cstdio>
#include <initializer_list>
#include "decode-split.cuh"

template <int TILE>
void check(int visible, int num_partitions, int min_keys) {
  const DecodeSplit s = decode_split<TILE>(visible, num_partitions, min_keys);
  const int keys = visible > 0 ? visible : 0;
  int errors = 0;
  if (s.used < 1 || s.used > num_partitions || s.size % TILE != 0 || s.size < TILE) errors++;
  // Partitions [p · size, min(keys, (p + 1) · size)) for p < used cover [0, keys) once, each non-empty but (with no keys) the first.
  if ((long long)s.used * s.size < keys || (keys > 0 && (long long)(s.used - 1) * s.size >= keys)) errors++;
  // Every partition but the last holds more than min_keys / 2 (the last at least one key).
  if (s.used > 1 && 2 * s.size <= min_keys) errors++;
  // As many partitions as ceil(keys / min_keys), where the launch has them (and min_keys is whole tiles).
  const int worth = keys > 0 ? (keys + min_keys - 1) / min_keys : 1;
  if (min_keys % TILE == 0 && worth <= num_partitions && s.used != worth) errors++;
  if (errors > 0) std::printf("{\\"tile\\": %d, \\"visible\\": %d, \\"partitions\\": %d, \\"min\\": %d, \\"used\\": %d, \\"size\\": %d}\\n", TILE, visible, num_partitions, min_keys, s.used, s.size);
}

int main() {
  const int launches[] = {1, 2, 3, 4, 16, 64, 132, 528};
  const int mins[] = {32, 64, 256};
  for (int min_keys : mins) {
    for (int num_partitions : launches) {
      for (int visible = -3; visible <= 70000; visible += visible < 2000 ? 1 : 997) {
        check<DECODE_SPLIT_TILE>(visible, num_partitions, min_keys);
        check<64>(visible, num_partitions, min_keys);  // MLA's decode kernel
      }
    }
  }
  // The host twin's inputs and the header's answers, for attention-plan.ts's decodeSplit to match.
  for (int visible = -3; visible <= 70000; visible += visible < 300 ? 1 : 997)
    for (int num_partitions : {1, 3, 132, 528})
      for (int min_keys : {64, 256}) {
        const DecodeSplit t32 = decode_split<32>(visible, num_partitions, min_keys), t64 = decode_split<64>(visible, num_partitions, min_keys);
        std::printf("twin %d %d %d %d %d %d %d\\n", visible, num_partitions, min_keys, t32.used, t32.size, t64.used, t64.size);
      }
  const DecodeSplit a = decode_split(200, 132, 64), b = decode_split(32768, 132, 64), c = decode_split(32768, 2, 64);
  const DecodeSplit m = decode_split<64>(200, 132, 256), n = decode_split<64>(4096, 132, 256);
  std::printf("{\\"short\\": [%d, %d], \\"long\\": [%d, %d], \\"few\\": [%d, %d], \\"mlaShort\\": [%d, %d], \\"mla4k\\": [%d, %d]}\\n", a.used, a.size, b.used, b.size, c.used, c.size, m.used, m.size, n.used, n.size);
}
`;

const skip = spawnSync('g++', ['--version'], { stdio: 'ignore' }).status === 0 ? false : 'no g++';

test("a decode's keys fall in exactly one of the partitions it uses, whole tiles (32 keys, and MLA's 64), none but the last short", { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-decode-split-'));
  try {
    writeFileSync(join(dir, 'check.cpp'), CHECK_PROGRAM);
    execFileSync('g++', ['-std=c++17', `-I${KERNELS}`, '-o', join(dir, 'check'), join(dir, 'check.cpp')]);
    const output = execFileSync(join(dir, 'check'), { encoding: 'utf8', maxBuffer: 1 << 24 }).trim().split('\n');
    const twins = output.filter((l) => l.startsWith('twin ')).map((l) => l.split(' ').slice(1).map(Number));
    const lines = output.filter((l) => !l.startsWith('twin '));
    const mismatches = twins.filter(([visible, parts, min, used32, size32, used64, size64]) => {
      const a = decodeSplit(visible, parts, min, 32), b = decodeSplit(visible, parts, min, 64);
      return a.numPartitions !== used32 || a.partitionSize !== size32 || b.numPartitions !== used64 || b.partitionSize !== size64;
    });
    assert.ok(twins.length > 1000);
    assert.deepEqual(mismatches.slice(0, 5), [], 'the host twin (attention-plan.ts decodeSplit) splits as decode-split.cuh does');
    const summary = JSON.parse(lines.pop()!) as { short: number[]; long: number[]; few: number[]; mlaShort: number[]; mla4k: number[] };
    assert.deepEqual(lines, [], `splits that break the rules:\n${lines.slice(0, 10).join('\n')}`);
    // 200 keys of a launch sized for 40k: 4 partitions of 64 (a tile of the tensor-core kernel each), not 132.
    assert.deepEqual(summary.short, [4, 64]);
    assert.deepEqual(summary.long, [128, 256]);
    assert.deepEqual(summary.few, [2, 16384]);
    // MLA (64-key tiles, 256 keys at least): a 200-key decode in one partition, 4,096 keys in 16 of 256.
    assert.deepEqual(summary.mlaShort, [1, 256]);
    assert.deepEqual(summary.mla4k, [16, 256]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the header's tile is the host's DECODE_TILE_KEYS, and the kernels get MIN_KEYS_PER_PARTITION", () => {
  const header = readFileSync(join(KERNELS, 'decode-split.cuh'), 'utf8');
  assert.match(header, new RegExp(`constexpr int DECODE_SPLIT_TILE = ${DECODE_TILE_KEYS};`));
  const launcher = readFileSync(join(KERNELS, 'decode-attention.ts'), 'utf8');
  assert.equal(launcher.match(/MIN_KEYS_PER_PARTITION,\n/g)?.length, 2, 'both decode kernels take min_partition_keys');
  assert.ok(MIN_KEYS_PER_PARTITION >= DECODE_TILE_KEYS);
});
