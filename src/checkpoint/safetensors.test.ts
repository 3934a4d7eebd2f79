import assert from 'node:assert/strict';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { KeelError } from '../errors.ts';
import { writeRawSafetensors, writeSafetensors } from '../../test/helpers/model-safetensors-writer.ts';
import { tempDir } from '../../test/helpers/model-temp-dir.ts';
import { float32ToHostTensor, hostTensorToFloat32 } from '../tensor/host-dtype.ts';
import { SafetensorsFile } from './safetensors.ts';

function rejects(fn: () => unknown, ...fragments: (string | RegExp)[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof KeelError, `expected KeelError, got ${error}`);
    assert.equal(error.kind, 'invalid_model');
    for (const f of fragments) {
      if (typeof f === 'string') assert.ok(error.message.includes(f), `"${error.message}" lacks "${f}"`);
      else assert.match(error.message, f);
    }
    return true;
  });
}

test('reads f32, f16 and bf16 tensors back with their shapes', (t) => {
  const path = join(tempDir(t), 'model.safetensors');
  const values = Float32Array.from({ length: 6 }, (_, i) => i - 2.5);
  writeSafetensors(
    path,
    {
      a: float32ToHostTensor(values, 'f32', [2, 3]),
      b: float32ToHostTensor(values, 'f16', [3, 2]),
      c: float32ToHostTensor(values, 'bf16', [6]),
      empty: float32ToHostTensor(new Float32Array(0), 'f32', [0, 4]),
    },
    { format: 'pt' },
  );
  const file = SafetensorsFile.open(path);
  t.after(() => file.close());
  assert.deepEqual([...file.tensors.keys()], ['a', 'b', 'c', 'empty']);
  for (const [name, dtype, shape] of [
    ['a', 'f32', [2, 3]],
    ['b', 'f16', [3, 2]],
    ['c', 'bf16', [6]],
  ] as const) {
    const tensor = file.read(name);
    assert.equal(tensor.dtype, dtype);
    assert.deepEqual(tensor.shape, shape);
    assert.deepEqual(hostTensorToFloat32(tensor), values);
  }
  assert.deepEqual(file.read('empty').shape, [0, 4]);
  rejects(() => file.read('nope'), path, '"nope"');
});

test('a tensor of another dtype is listed but reading it names the tensor and dtype', (t) => {
  const path = join(tempDir(t), 'x.safetensors');
  writeRawSafetensors(path, JSON.stringify({ ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }), new Uint8Array(16));
  const file = SafetensorsFile.open(path);
  t.after(() => file.close());
  assert.deepEqual(file.entry('ids').shape, [2]);
  rejects(() => file.read('ids'), '"ids"', 'I64');
});

test('corrupt files are rejected with errors naming the file and the problem', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'bad.safetensors');
  const entry = (dtype: string, shape: number[], offsets: number[]) => ({ dtype, shape, data_offsets: offsets });

  writeFileSync(path, new Uint8Array(5));
  rejects(() => SafetensorsFile.open(path), path, 'too short');

  writeRawSafetensors(path, '{}', new Uint8Array(0), 4096);
  rejects(() => SafetensorsFile.open(path), path, 'header length 4096 runs past the end');

  writeRawSafetensors(path, '{}', new Uint8Array(0), 2 ** 40);
  rejects(() => SafetensorsFile.open(path), 'implausibly large');

  writeRawSafetensors(path, '{"w": {"dtype": "F32",', new Uint8Array(0));
  rejects(() => SafetensorsFile.open(path), path, 'invalid header JSON');

  writeRawSafetensors(path, '[1, 2]', new Uint8Array(0));
  rejects(() => SafetensorsFile.open(path), 'must be a JSON object');

  writeRawSafetensors(path, JSON.stringify({ w: entry('F32', [4], [0, 16]) }), new Uint8Array(8));
  rejects(() => SafetensorsFile.open(path), '"w"', 'outside the data section');

  writeRawSafetensors(path, JSON.stringify({ w: entry('F32', [0], [8, 4]) }), new Uint8Array(8));
  rejects(() => SafetensorsFile.open(path), '"w"', 'outside the data section');

  writeRawSafetensors(path, JSON.stringify({ w: entry('BF16', [3], [0, 8]) }), new Uint8Array(8));
  rejects(() => SafetensorsFile.open(path), '"w"', 'holds 8 bytes', 'needs 6');

  writeRawSafetensors(path, JSON.stringify({ w: entry('F32', [2, -1], [0, 8]) }), new Uint8Array(8));
  rejects(() => SafetensorsFile.open(path), '"w"', 'shape');

  writeRawSafetensors(path, JSON.stringify({ w: entry('F32', [2], [0, 8]), v: { dtype: 'F32', shape: [2] } }), new Uint8Array(8));
  rejects(() => SafetensorsFile.open(path), '"v"', 'data_offsets');

  writeRawSafetensors(
    path,
    JSON.stringify({ a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [4, 12]) }),
    new Uint8Array(12),
  );
  rejects(() => SafetensorsFile.open(path), /"a" and "b" overlap/);

  rejects(() => SafetensorsFile.open(join(dir, 'missing.safetensors')), 'missing.safetensors');
});

test('a file truncated inside its data section is caught at open', (t) => {
  const path = join(tempDir(t), 'model.safetensors');
  writeSafetensors(path, { w: float32ToHostTensor(new Float32Array(64), 'f32', [8, 8]) });
  truncateSync(path, readFileSync(path).length - 10);
  rejects(() => SafetensorsFile.open(path), path, '"w"', 'truncated');
});
