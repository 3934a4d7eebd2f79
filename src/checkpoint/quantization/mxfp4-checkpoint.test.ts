import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hostTensorToFloat32 } from '../../tensor/host-dtype.ts';
import { dequantizeMxfp4 } from '../../tensor/mxfp4.ts';
import { openCheckpoint, type Checkpoint } from '../checkpoint.ts';
import { mxfp4Checkpoint } from './mxfp4-checkpoint.ts';

const FIXTURE = new URL('../../../test/fixtures/gpt-oss-mxfp4', import.meta.url).pathname;
const GATE_UP = 'model.layers.0.mlp.experts.gate_up_proj';

test('an MXFP4 checkpoint reads as its 16-bit self: NAME in transformers\' dequantized shape, its packed weight as stored', () => {
  const ckpt = mxfp4Checkpoint(openCheckpoint(FIXTURE));
  try {
    assert.ok(ckpt.has(GATE_UP) && ckpt.tensorNames.includes(GATE_UP));
    assert.ok(!ckpt.tensorNames.some((n) => n.endsWith('_blocks') || n.endsWith('_scales')));
    // Stored [E, 2n, hidden / 32, 16]: NAME is [E, hidden, 2n], the packed weight [E, 2n, hidden].
    assert.deepEqual(ckpt.info(GATE_UP).shape, [4, 64, 64]);
    const packed = ckpt.readMxfp4!(GATE_UP)!;
    assert.deepEqual(packed.shape, [4, 64, 64]);
    const values = hostTensorToFloat32(ckpt.read(GATE_UP));
    const decoded = dequantizeMxfp4(packed);
    for (let e = 0; e < 4; e++) {
      for (let row = 0; row < 64; row++) for (let col = 0; col < 64; col++) assert.equal(values[(e * 64 + col) * 64 + row], decoded[(e * 64 + row) * 64 + col]);
    }
    assert.ok(decoded.some((v) => v !== 0));
    assert.equal(ckpt.readMxfp4!(`${GATE_UP}_bias`), null, 'a 16-bit tensor');
    assert.equal(ckpt.info(`${GATE_UP}_bias`).dtype, 'BF16');
  } finally {
    ckpt.close();
  }
});

test('blocks that are not U8 [..., rows, cols / 32, 16] with matching scales are refused, naming both tensors', () => {
  const inner = openCheckpoint(FIXTURE);
  const blocks = `${GATE_UP}_blocks`;
  const wrong = (change: (raw: ReturnType<Checkpoint['readRaw']>, name: string) => void): Checkpoint => ({
    ...inner,
    get dir() {
      return inner.dir;
    },
    get tensorNames() {
      return inner.tensorNames;
    },
    has: (n) => inner.has(n),
    info: (n) => inner.info(n),
    read: (n) => inner.read(n),
    readRaw: (n) => {
      const raw = inner.readRaw(n);
      change(raw, n);
      return raw;
    },
    close: () => inner.close(),
  });
  try {
    const asF32 = mxfp4Checkpoint(wrong((raw, n) => n === blocks && (raw.dtype = 'F32')));
    assert.throws(() => asF32.readMxfp4!(GATE_UP), /gate_up_proj_blocks \[4, 64, 2, 16\] F32 and .*gate_up_proj_scales \[4, 64, 2\] U8 are not MXFP4 blocks/);
    const nanScale = mxfp4Checkpoint(wrong((raw, n) => n === `${GATE_UP}_scales` && (raw.data[3] = 255)));
    assert.throws(() => nanScale.readMxfp4!(GATE_UP), /block 3 has scale code 255 \(NaN\)/);
  } finally {
    inner.close();
  }
});
