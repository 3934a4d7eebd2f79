import assert from 'node:assert/strict';
import { test } from 'node:test';
import { marlinLayoutOnHost, marlinProblem } from '../../../src/backend/cuda/kernels/marlin-layout.ts';
import { seededRng } from '../../../src/bench/synthetic-batch.ts';
import { emptyQuantizedWeight, getCode, numGroups, putCode, type QuantizedFormat, type QuantizedWeight } from '../../../src/tensor/quantized-weight.ts';

// The fragment layout's host twin (what the GPU test compares the device's re-layout with), read
// back the way marlin-gemm.cu decodes it and placed by the PTX ISA's definition of the B operand
// of mma.sync m16n8k16 (lane l holds B[k][n] at n = l / 4, k = 2 (l % 4) + 8 r + {0, 1} in register
// r): every code of W must come back exactly once, at its own row and column.

const rng = seededRng(77);

function randomWeight(format: QuantizedFormat, rows: number, cols: number, groupSize: number, asymmetric: boolean): QuantizedWeight {
  const w = emptyQuantizedWeight(format, rows, cols, groupSize, asymmetric);
  const top = format === 'int4' ? 16 : 256;
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) putCode(w, r, c, Math.floor(rng() * top));
  for (let i = 0; i < w.scales.length; i++) w.scales[i] = rng();
  if (w.zeros) for (let i = 0; i < w.zeros.length; i++) w.zeros[i] = Math.floor(rng() * top);
  return w;
}

/** W's codes [rows][cols] recovered from the fragment words as the kernel's warps consume them. */
function readFragments(w: QuantizedWeight, words: Uint32Array): Int32Array {
  const four = w.format === 'int4';
  const seen = new Int32Array(w.rows * w.cols).fill(-1);
  const units = w.cols / (four ? 64 : 32);
  const place = (strip: number, step: number, lane: number, tile: number, reg: number, lo: number, hi: number) => {
    const n = strip * 16 + tile * 8 + (lane >> 2);
    const k = step * 16 + 2 * (lane & 3) + 8 * reg;
    for (const [dk, code] of [[0, lo], [1, hi]]) {
      assert.equal(seen[n * w.cols + k + dk], -1, `code (${n}, ${k + dk}) placed twice`);
      seen[n * w.cols + k + dk] = code;
    }
  };
  for (let strip = 0; strip < w.rows / 16; strip++) {
    for (let unit = 0; unit < units; unit++) {
      for (let lane = 0; lane < 32; lane++) {
        const word = (c: number) => words[((strip * units + unit) * 32 + lane) * 4 + c];
        if (four) {
          // Word c is k step 4 unit + c; (word >> 4p) & 0x000f000f holds register p % 2 of tile p / 2.
          for (let c = 0; c < 4; c++) {
            for (let p = 0; p < 4; p++) {
              const t = (word(c) >>> (4 * p)) & 0x000f000f;
              place(strip, unit * 4 + c, lane, p >> 1, p & 1, t & 0xffff, t >>> 16);
            }
          }
        } else {
          // Words 2s, 2s + 1 are k step 2 unit + s, tiles 0 and 1; bytes 2r, 2r + 1 register r.
          for (let c = 0; c < 4; c++) {
            for (let r = 0; r < 2; r++) place(strip, unit * 2 + (c >> 1), lane, c & 1, r, (word(c) >>> (16 * r)) & 0xff, (word(c) >>> (16 * r + 8)) & 0xff);
          }
        }
      }
    }
  }
  return seen;
}

test('the fragment layout holds every code once, where the mma B fragments and the kernel decode expect it', () => {
  for (const format of ['int4', 'int8', 'fp8-e4m3'] as const) {
    for (const [rows, cols, groupSize] of [[16, 64, 64], [48, 192, 64], [32, 256, 128], [64, 128, 128]]) {
      const w = randomWeight(format, rows, cols, groupSize, format !== 'fp8-e4m3' && rng() < 0.5);
      const layout = marlinLayoutOnHost(w);
      const seen = readFragments(w, new Uint32Array(layout.codes.buffer, layout.codes.byteOffset, layout.codes.byteLength / 4));
      for (let n = 0; n < rows; n++) {
        for (let k = 0; k < cols; k++) assert.equal(seen[n * cols + k], getCode(w, n, k), `${format} [${rows}, ${cols}] code (${n}, ${k})`);
      }
      const groups = numGroups(w);
      for (let n = 0; n < rows; n++) {
        for (let g = 0; g < groups; g++) {
          const at = ((n >> 4) * groups + g) * 16 + (n & 15);
          assert.equal(layout.scales[at], w.scales[n * groups + g]);
          if (w.zeros) assert.equal(layout.zeros![at], w.zeros[n * groups + g]);
        }
      }
    }
  }
});

test('weights the fragment layout does not fit are named with the reason', () => {
  const w = randomWeight('int4', 16, 64, 64, false);
  assert.equal(marlinProblem(w), null);
  assert.match(marlinProblem({ ...w, rows: 24 }) ?? '', /16-row strips/);
  assert.match(marlinProblem({ ...w, cols: 96 }) ?? '', /64-column steps/);
  assert.match(marlinProblem({ ...w, cols: 256, groupSize: 32 }) ?? '', /groups of 32/);
  assert.match(marlinProblem({ ...w, format: 'nf4' }) ?? '', /nf4/);
  assert.throws(() => marlinLayoutOnHost({ ...w, format: 'nf4' }), /nf4/);
});
