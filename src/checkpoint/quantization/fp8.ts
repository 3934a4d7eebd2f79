import { invalidModel } from '../../errors.ts';
import { emptyQuantizedWeight, type QuantizedWeight } from '../../tensor/quantized-weight.ts';
import type { Checkpoint } from '../checkpoint.ts';
import { readFloats } from './packed-tensors.ts';

/** How an FP8 layer's scales cover its weight. */
export type Fp8Scales =
  | { kind: 'tensor' }
  | { kind: 'channel' }
  /** One scale per [rows, cols] block: DeepSeek-V3's 128 x 128. */
  | { kind: 'block'; rows: number; cols: number };

/**
 * An FP8 e4m3 layer: `.weight` F8_E4M3 [out, in] and its scales `scaleName` (F32, F16 or BF16):
 * one value ([] or [1]), one per output row ([out] or [out, 1]), or one per block
 * [ceil(out / rows), ceil(in / cols)]. W = fp8(code) * scale. Block scales become per-row groups
 * of `cols` columns (each row repeats its block row's scales), which is Keel's layout.
 */
export function readFp8Layer(ckpt: Checkpoint, base: string, scaleName: string, scales: Fp8Scales): QuantizedWeight {
  const where = `${ckpt.dir}: FP8 layer ${base}`;
  const codes = ckpt.readRaw(`${base}.weight`);
  if (codes.dtype !== 'F8_E4M3') throw invalidModel(`${where}: weight is ${codes.dtype}, expected F8_E4M3`);
  if (codes.shape.length !== 2) throw invalidModel(`${where}: weight has shape [${codes.shape.join(', ')}], expected [out, in]`);
  const [rows, cols] = codes.shape;
  const values = readFloats(ckpt, `${base}.${scaleName}`, null);
  const groupSize = scales.kind === 'block' ? Math.min(scales.cols, cols) : cols;
  const w = emptyQuantizedWeight('fp8-e4m3', rows, cols, groupSize, false);
  w.codes.set(codes.data);
  if (scales.kind === 'block') {
    const blockRows = Math.ceil(rows / scales.rows);
    const groups = Math.ceil(cols / scales.cols);
    if (values.length !== blockRows * groups) throw invalidModel(`${where}: ${values.length} block scales, expected ${blockRows} x ${groups}`);
    for (let r = 0; r < rows; r++) w.scales.set(values.subarray(Math.floor(r / scales.rows) * groups, (Math.floor(r / scales.rows) + 1) * groups), r * groups);
  } else if (scales.kind === 'channel') {
    if (values.length !== rows) throw invalidModel(`${where}: ${values.length} channel scales for ${rows} rows`);
    w.scales.set(values);
  } else {
    if (values.length !== 1) throw invalidModel(`${where}: ${values.length} values in a per-tensor scale`);
    w.scales.fill(values[0]);
  }
  return w;
}

/** Whether `.weight` of layer `base` is stored as FP8 codes. */
export function isFp8Layer(ckpt: Checkpoint, base: string): boolean {
  return ckpt.has(`${base}.weight`) && ckpt.info(`${base}.weight`).dtype === 'F8_E4M3';
}
