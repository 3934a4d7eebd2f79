import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { KeelError } from '../../errors.ts';
import { encodeGguf, f32, f32s, i32s, str, strings, u32, writeGguf, type GgufTensorSpec, type KvValue } from '../../../test/helpers/gguf-writer.ts';
import { tempDir } from '../../../test/helpers/model-temp-dir.ts';
import { GgufFile } from './gguf-file.ts';

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

const f32Bytes = (values: number[]) => new Uint8Array(Float32Array.from(values).buffer);

/** Every value type once, a nested array, and tensors of two types. */
const KVS: Record<string, KvValue> = {
  'general.architecture': str('llama'),
  'general.name': str('tiny ✓'),
  'u8': { type: 'uint8', value: 200 },
  'i8': { type: 'int8', value: -100 },
  'u16': { type: 'uint16', value: 60000 },
  'i16': { type: 'int16', value: -30000 },
  'u32': u32(4_000_000_000),
  'i32': { type: 'int32', value: -2_000_000_000 },
  'f32': f32(0.5),
  'bool': { type: 'bool', value: true },
  'u64': { type: 'uint64', value: 2n ** 60n },
  'i64': { type: 'int64', value: -5n },
  'f64': { type: 'float64', value: Math.PI },
  'tokens': strings(['a', 'b', '']),
  'scores': f32s([0, -1.5]),
  'types': i32s([1, 3]),
  'nested': { type: 'array', elementType: 'array', items: [{ type: 'array', elementType: 'uint8', items: [1, 2] }, { type: 'array', elementType: 'string', items: ['x'] }] },
};

const TENSORS: GgufTensorSpec[] = [
  { name: 'a', dims: [3, 2], typeId: 0, data: f32Bytes([1, 2, 3, 4, 5, 6]) },
  { name: 'b', dims: [32], typeId: 8, data: new Uint8Array(34).fill(7) },
];

function writeFile(dir: string, bytes: Uint8Array, name = 'model.gguf'): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

test('reads every metadata value type, nested arrays, tensor infos and tensor bytes of a version 3 file', (t) => {
  const path = join(tempDir(t), 'model.gguf');
  writeGguf(path, KVS, TENSORS);
  const file = GgufFile.open(path);
  t.after(() => file.close());
  assert.equal(file.version, 3);
  assert.equal(file.alignment, 32);
  assert.equal(file.dataOffset % 32, 0);
  const m = file.metadata;
  assert.equal(m.string('general.name'), 'tiny ✓');
  assert.deepEqual(['u8', 'i8', 'u16', 'i16', 'u32', 'i32', 'f32', 'f64'].map((k) => m.number(k)), [200, -100, 60000, -30000, 4_000_000_000, -2_000_000_000, 0.5, Math.PI]);
  assert.equal(m.bool('bool'), true);
  assert.equal(m.raw('u64'), 2n ** 60n);
  assert.equal(m.raw('i64'), -5);
  assert.deepEqual(m.strings('tokens'), ['a', 'b', '']);
  assert.deepEqual(m.numbers('scores'), [0, -1.5]);
  assert.deepEqual(m.numbers('types'), [1, 3]);
  assert.deepEqual(m.raw('nested'), {
    elementType: 'array',
    items: [{ elementType: 'uint8', items: [1, 2] }, { elementType: 'string', items: ['x'] }],
  });
  assert.deepEqual(file.tensor('a').dims, [3, 2]);
  assert.equal(file.tensor('b').type.name, 'Q8_0');
  assert.equal(file.tensor('b').byteLength, 34);
  assert.deepEqual(new Float32Array(file.readBytes('a').buffer.slice(0)), Float32Array.from([1, 2, 3, 4, 5, 6]));
  assert.deepEqual(file.readBytes('b'), new Uint8Array(34).fill(7));
});

test('reads version 2 files and a custom alignment', (t) => {
  const path = writeFile(tempDir(t), encodeGguf({ 'general.name': str('x') }, TENSORS, { version: 2, alignment: 64 }));
  const file = GgufFile.open(path);
  t.after(() => file.close());
  assert.equal(file.version, 2);
  assert.equal(file.alignment, 64);
  assert.equal(file.dataOffset % 64, 0);
  assert.equal(file.tensor('b').offset % 64, 0);
  assert.deepEqual(file.readBytes('b'), new Uint8Array(34).fill(7));
});

test('typed getters name the key when it is missing or of another type', (t) => {
  const path = join(tempDir(t), 'model.gguf');
  writeGguf(path, KVS, []);
  const file = GgufFile.open(path);
  t.after(() => file.close());
  rejects(() => file.metadata.uint('llama.block_count'), 'required metadata key llama.block_count is missing');
  rejects(() => file.metadata.uint('i8'), 'i8 must be a non-negative integer', '-100');
  rejects(() => file.metadata.string('u32'), 'u32 must be a string');
  rejects(() => file.metadata.strings('scores'), 'scores must be an array of strings', 'float32');
  assert.equal(file.metadata.uint('missing', 7), 7);
});

// --- fuzzing: every broken file gives an invalid_model KeelError naming the problem ---

test('a file truncated at every byte boundary is refused with a clear error, never a crash', (t) => {
  const dir = tempDir(t);
  const whole = encodeGguf(KVS, TENSORS);
  const path = join(dir, 'cut.gguf');
  // The last tensor (34 bytes) is followed by padding to the alignment, which the file may lack.
  for (let length = 0; length < whole.length - (32 - 2); length++) {
    writeFileSync(path, whole.subarray(0, length));
    assert.throws(
      () => GgufFile.open(path).close(),
      (error: unknown) => error instanceof KeelError && error.kind === 'invalid_model' && /truncated|not a GGUF file/.test(error.message),
      `truncated to ${length} bytes`,
    );
  }
});

test('huge counts and lengths are refused before anything is allocated', (t) => {
  const dir = tempDir(t);
  rejects(() => GgufFile.open(writeFile(dir, encodeGguf(KVS, TENSORS, { tensorCount: 2n ** 62n }))), 'the tensor count', 'more than the file');
  rejects(() => GgufFile.open(writeFile(dir, encodeGguf(KVS, TENSORS, { kvCount: 1_000_000n }))), 'the metadata key count', 'more than the file');
  rejects(() => GgufFile.open(writeFile(dir, encodeGguf(KVS, TENSORS, { tensorCount: 3n }))), 'runs past the end of the file');
  rejects(() => GgufFile.open(writeFile(dir, encodeGguf(KVS, TENSORS, { kvCount: BigInt(Object.keys(KVS).length - 1) }))), 'tensor nested has 9 dimensions');
  // An array claiming 2^40 float32 values in a small file.
  const big = encodeGguf({ scores: f32s([1, 2]) }, []);
  const countAt = 4 + 4 + 8 + 8 + 8 + 'scores'.length + 4 + 4;
  new DataView(big.buffer, big.byteOffset).setBigUint64(countAt, 2n ** 40n, true);
  rejects(() => GgufFile.open(writeFile(dir, big)), 'the element count of metadata key scores', 'more than the file');
  new DataView(big.buffer, big.byteOffset).setBigUint64(countAt, 10n, true);
  rejects(() => GgufFile.open(writeFile(dir, big)), 'too soon for metadata key scores (10 float32 values) (40 bytes)', 'truncated');
  // A string length of 2^63.
  const long = encodeGguf({ 'general.name': str('abc') }, []);
  new DataView(long.buffer, long.byteOffset).setBigUint64(24 + 8 + 'general.name'.length + 4, 2n ** 63n, true);
  rejects(() => GgufFile.open(writeFile(dir, long)), 'the length of metadata key general.name', 'more than the file');
});

test('huge tensor dimensions are refused', (t) => {
  const dir = tempDir(t);
  const huge = (dims: number[]) => writeFile(dir, encodeGguf({}, [{ name: 'w', dims, typeId: 0, data: new Uint8Array(8) }]));
  rejects(() => GgufFile.open(huge([2 ** 40])), 'tensor w has dimension 0', 'impossible');
  rejects(() => GgufFile.open(huge([64, 64, 64])), 'tensor w (1048576 bytes at data offset 0) runs past the end');
  rejects(() => GgufFile.open(huge([0])), 'dimension 0 of 0');
  rejects(() => GgufFile.open(huge([1, 1, 1, 1, 1])), '5 dimensions');
});

test('bad magic, versions, value types and tensor types are named', (t) => {
  const dir = tempDir(t);
  const bytes = encodeGguf(KVS, TENSORS);
  const patched = (at: number, value: number) => {
    const copy = bytes.slice();
    new DataView(copy.buffer).setUint32(at, value, true);
    return writeFile(dir, copy);
  };
  rejects(() => GgufFile.open(patched(0, 0x4c4c5546)), 'not a GGUF file');
  rejects(() => GgufFile.open(patched(4, 1)), 'GGUF version 1 is not supported', 'versions 2 and 3');
  rejects(() => GgufFile.open(patched(4, 0x03000000)), 'big-endian');
  rejects(() => GgufFile.open(writeFile(dir, encodeGguf({}, TENSORS, { version: 4 }))), 'GGUF version 4');
  const firstType = 24 + 8 + 'general.architecture'.length;
  rejects(() => GgufFile.open(patched(firstType, 13)), 'metadata key general.architecture has value type id 13');
  rejects(() => GgufFile.open(writeFile(dir, encodeGguf({}, [{ ...TENSORS[0], typeId: 16 }]))), 'tensor a has type IQ2_XXS (id 16)', 'supported: F32, F16');
  rejects(() => GgufFile.open(writeFile(dir, encodeGguf({}, [{ ...TENSORS[0], typeId: 99 }]))), 'unknown type id 99');
  const badBool = encodeGguf({ flag: { type: 'bool', value: true } }, []);
  badBool[24 + 8 + 'flag'.length + 4] = 5;
  rejects(() => GgufFile.open(writeFile(dir, badBool)), 'flag is a bool of value 5');
  const badUtf8 = encodeGguf({ 'general.name': str('ab') }, []);
  badUtf8[24 + 8 + 'general.name'.length + 4 + 8 + 1] = 0xff;
  rejects(() => GgufFile.open(writeFile(dir, badUtf8)), 'general.name', 'not valid UTF-8');
});

test('bad alignment, misaligned and out-of-file offsets, overlaps, odd row lengths and duplicate names are refused', (t) => {
  const dir = tempDir(t);
  const open = (kvs: Record<string, KvValue>, tensors: GgufTensorSpec[]) => GgufFile.open(writeFile(dir, encodeGguf(kvs, tensors)));
  rejects(() => open({ 'general.alignment': u32(0) }, TENSORS), 'general.alignment is 0', 'power of two');
  rejects(() => open({ 'general.alignment': u32(48) }, TENSORS), 'general.alignment is 48');
  rejects(() => open({ 'general.alignment': str('32') }, TENSORS), 'general.alignment must be a non-negative integer');
  rejects(() => open({}, [TENSORS[0], { ...TENSORS[1], offset: 4n }]), 'tensor b starts at data offset 4', 'alignment 32');
  rejects(() => open({}, [TENSORS[0], { ...TENSORS[1], offset: 32n * 1000n }]), 'tensor b (34 bytes at data offset 32000) runs past the end');
  rejects(() => open({}, [TENSORS[0], { ...TENSORS[1], offset: 2n ** 63n }]), 'tensor b', 'runs past the end');
  rejects(() => open({}, [TENSORS[0], { name: 'c', dims: [8], typeId: 0, data: new Uint8Array(32), offset: 0n }, { ...TENSORS[1], offset: 64n }]), 'tensors a and c overlap');
  rejects(() => open({}, [{ name: 'q', dims: [16], typeId: 8, data: new Uint8Array(34) }]), 'rows of 16 values, not a multiple of Q8_0', 'block of 32');
  rejects(() => open({}, [TENSORS[0], { ...TENSORS[1], name: 'a' }]), 'tensor a appears twice');
  const dupKey = encodeGguf({ 'general.name': str('x'), 'general.nama': str('y') }, []);
  const second = Buffer.from(dupKey).indexOf('general.nama');
  dupKey[second + 'general.nam'.length] = 'e'.charCodeAt(0);
  rejects(() => GgufFile.open(writeFile(dir, dupKey)), 'metadata key general.name appears twice');
});

test('random corruption of a valid file never crashes: it opens or fails with invalid_model', (t) => {
  const dir = tempDir(t);
  const whole = encodeGguf(KVS, TENSORS);
  const seed = Number(process.env.KEEL_TEST_SEED ?? Date.now() % 100000);
  let state = seed;
  const next = () => (state = (state * 1103515245 + 12345) % 2 ** 31);
  const path = join(dir, 'mutated.gguf');
  for (let trial = 0; trial < 300; trial++) {
    const copy = whole.slice();
    for (let k = 0; k < 1 + (next() % 4); k++) copy[next() % copy.length] = next() % 256;
    writeFileSync(path, copy);
    try {
      GgufFile.open(path).close();
    } catch (error) {
      assert.ok(error instanceof KeelError && error.kind === 'invalid_model', `seed ${seed} trial ${trial}: ${error}`);
    }
  }
});
