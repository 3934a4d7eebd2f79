import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { test } from 'node:test';
import koffi from 'koffi';
import {
  CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
  CUlaunchAttribute,
  CUlaunchAttributeValue,
  CUlaunchConfig,
  ProgrammaticLaunchConfig,
} from './launch-config.ts';

// cuLaunchKernelEx reads the config as cuda.h lays it out; a wrong offset would launch a wrong
// grid or drop the attribute without any error. So the koffi declarations are checked against what
// a C++ compiler makes of the installed toolkit's cuda.h, and the packed bytes are read back.

/** The include directory holding cuda.h: $CUDA_HOME's, the one next to nvcc on PATH, or /usr/local/cuda's. */
function cudaInclude(): string | null {
  const candidates = [process.env.CUDA_HOME, process.env.CUDA_PATH].filter((d): d is string => !!d).map((d) => join(d, 'include'));
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const nvcc = join(dir, 'nvcc');
    if (dir && existsSync(nvcc)) candidates.push(join(dirname(dirname(realpathSync(nvcc))), 'include'));
  }
  candidates.push('/usr/local/cuda/include');
  return candidates.find((d) => existsSync(join(d, 'cuda.h'))) ?? null;
}

const LAYOUT_PROGRAM = `#include <cuda.h>
#include <cstddef>
#include <cstdio>
int main() {
  std::printf("{\\"valueSize\\": %zu, \\"valueAlign\\": %zu, \\"attributeSize\\": %zu, \\"attributeAlign\\": %zu, \\"id\\": %zu, \\"value\\": %zu,",
              sizeof(CUlaunchAttributeValue), alignof(CUlaunchAttributeValue), sizeof(CUlaunchAttribute), alignof(CUlaunchAttribute),
              offsetof(CUlaunchAttribute, id), offsetof(CUlaunchAttribute, value));
  std::printf("\\"configSize\\": %zu, \\"gridDimX\\": %zu, \\"blockDimX\\": %zu, \\"sharedMemBytes\\": %zu, \\"hStream\\": %zu, \\"attrs\\": %zu, \\"numAttrs\\": %zu,",
              sizeof(CUlaunchConfig), offsetof(CUlaunchConfig, gridDimX), offsetof(CUlaunchConfig, blockDimX), offsetof(CUlaunchConfig, sharedMemBytes),
              offsetof(CUlaunchConfig, hStream), offsetof(CUlaunchConfig, attrs), offsetof(CUlaunchConfig, numAttrs));
  std::printf("\\"programmaticStreamSerialization\\": %d}\\n", (int)CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
}
`;

function hasCompiler(): boolean {
  try {
    execFileSync('g++', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const include = cudaInclude();
const skip = include === null ? 'no cuda.h (install the CUDA toolkit)' : !hasCompiler() ? 'no g++' : false;

test('the launch config structs have cuda.h layout', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-launch-config-'));
  try {
    writeFileSync(join(dir, 'layout.cpp'), LAYOUT_PROGRAM);
    execFileSync('g++', ['-std=c++17', `-I${include}`, '-o', join(dir, 'layout'), join(dir, 'layout.cpp')]);
    const c = JSON.parse(execFileSync(join(dir, 'layout'), { encoding: 'utf8' })) as Record<string, number>;
    assert.deepEqual(
      {
        valueSize: koffi.sizeof(CUlaunchAttributeValue),
        valueAlign: koffi.alignof(CUlaunchAttributeValue),
        attributeSize: koffi.sizeof(CUlaunchAttribute),
        attributeAlign: koffi.alignof(CUlaunchAttribute),
        id: koffi.offsetof(CUlaunchAttribute, 'id'),
        value: koffi.offsetof(CUlaunchAttribute, 'value'),
        configSize: koffi.sizeof(CUlaunchConfig),
        gridDimX: koffi.offsetof(CUlaunchConfig, 'gridDimX'),
        blockDimX: koffi.offsetof(CUlaunchConfig, 'blockDimX'),
        sharedMemBytes: koffi.offsetof(CUlaunchConfig, 'sharedMemBytes'),
        hStream: koffi.offsetof(CUlaunchConfig, 'hStream'),
        attrs: koffi.offsetof(CUlaunchConfig, 'attrs'),
        numAttrs: koffi.offsetof(CUlaunchConfig, 'numAttrs'),
        programmaticStreamSerialization: CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
      },
      c,
    );
  } finally {
    rmSync(dir, { recursive: true });
  }
});

test('pack writes the grid, block, shared bytes and stream, and one programmatic-serialization attribute', () => {
  const config = new ProgrammaticLaunchConfig();
  try {
    const stream = 0x7f12_3456_7890n;
    for (const [grid, block, shared] of [
      [[5120, 1, 1], [128, 1, 1], 0],
      [[8, 33, 2], [256, 2, 1], 98304],
    ] as const) {
      const decoded = koffi.decode(config.pack(grid, block, shared, stream), CUlaunchConfig) as Record<string, number | bigint>;
      assert.deepEqual(
        [decoded.gridDimX, decoded.gridDimY, decoded.gridDimZ, decoded.blockDimX, decoded.blockDimY, decoded.blockDimZ, decoded.sharedMemBytes],
        [...grid, ...block, shared],
      );
      assert.equal(BigInt(decoded.hStream), stream);
      assert.equal(decoded.numAttrs, 1);
      const attribute = decoded.attrs as bigint;
      assert.equal(koffi.decode(attribute, 'int'), CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
      assert.equal(koffi.decode(attribute + BigInt(koffi.offsetof(CUlaunchAttribute, 'value')), 'int'), 1, 'programmaticStreamSerializationAllowed');
    }
  } finally {
    config.dispose();
  }
});
