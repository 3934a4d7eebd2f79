import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { KeelError } from '../errors.ts';
import { writeSafetensors } from '../../test/helpers/model-safetensors-writer.ts';
import { tempDir } from '../../test/helpers/model-temp-dir.ts';
import { openCheckpoint } from './checkpoint.ts';
import { float32ToHostTensor, hostTensorToFloat32 } from '../tensor/host-dtype.ts';

const tensor = (...values: number[]) => float32ToHostTensor(Float32Array.from(values), 'f32', [values.length]);

function rejects(fn: () => unknown, ...fragments: string[]): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof KeelError && error.kind === 'invalid_model', `expected invalid_model KeelError, got ${error}`);
    for (const f of fragments) assert.ok(error.message.includes(f), `"${error.message}" lacks "${f}"`);
    return true;
  });
}

test('a single model.safetensors lists and reads its tensors', (t) => {
  const dir = tempDir(t);
  writeSafetensors(join(dir, 'model.safetensors'), { a: tensor(1, 2), b: tensor(3) });
  const ckpt = openCheckpoint(dir);
  t.after(() => ckpt.close());
  assert.deepEqual(ckpt.tensorNames, ['a', 'b']);
  assert.ok(ckpt.has('a') && !ckpt.has('c'));
  assert.deepEqual(ckpt.info('a'), { dtype: 'F32', shape: [2] });
  assert.deepEqual(Array.from(hostTensorToFloat32(ckpt.read('b'))), [3]);
  rejects(() => ckpt.read('model.norm.weight'), '"model.norm.weight"', dir);
  rejects(() => ckpt.info('c'), '"c"', dir);
});

test('a sharded checkpoint reads each tensor from the shard its index names', (t) => {
  const dir = tempDir(t);
  writeSafetensors(join(dir, 'model-00001-of-00002.safetensors'), { a: tensor(1), b: tensor(2) });
  writeSafetensors(join(dir, 'model-00002-of-00002.safetensors'), { c: tensor(3) });
  const weightMap = { a: 'model-00001-of-00002.safetensors', c: 'model-00002-of-00002.safetensors', b: 'model-00001-of-00002.safetensors' };
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 12 }, weight_map: weightMap }));
  const ckpt = openCheckpoint(dir);
  t.after(() => ckpt.close());
  assert.deepEqual(ckpt.tensorNames, ['a', 'c', 'b']);
  assert.deepEqual(['a', 'b', 'c'].map((n) => hostTensorToFloat32(ckpt.read(n))[0]), [1, 2, 3]);
});

test('a broken index is reported with the shard or tensor at fault', (t) => {
  const dir = tempDir(t);
  const index = join(dir, 'model.safetensors.index.json');
  writeSafetensors(join(dir, 'shard-1.safetensors'), { a: tensor(1) });

  writeFileSync(index, JSON.stringify({ weight_map: { a: 'shard-1.safetensors', b: 'shard-2.safetensors' } }));
  rejects(() => openCheckpoint(dir), 'shard-2.safetensors', 'missing');

  writeFileSync(index, JSON.stringify({ weight_map: { a: 'shard-1.safetensors', z: 'shard-1.safetensors' } }));
  rejects(() => openCheckpoint(dir), '"z"', 'shard-1.safetensors');

  writeFileSync(index, '{"weight_map": ');
  rejects(() => openCheckpoint(dir), index);

  writeFileSync(index, JSON.stringify({ metadata: {} }));
  rejects(() => openCheckpoint(dir), 'weight_map');
});

test('a directory without safetensors says PyTorch checkpoints are not supported', (t) => {
  const dir = tempDir(t);
  rejects(() => openCheckpoint(dir), 'model.safetensors', dir, 'not supported');
  writeFileSync(join(dir, 'pytorch_model.bin'), 'x');
  rejects(() => openCheckpoint(dir), 'found pytorch_model.bin', '.bin');
});
