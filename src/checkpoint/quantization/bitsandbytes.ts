import { invalidModel } from '../../errors.ts';
import { codeTable, emptyQuantizedWeight, putCode, type QuantizedWeight } from '../../tensor/quantized-weight.ts';
import type { Checkpoint } from '../checkpoint.ts';
import type { QuantizedLayerReader } from './layer-reader.ts';
import { checkShape, readFloats } from './packed-tensors.ts';
import type { BitsAndBytesConfig } from './quantization-config.ts';

/**
 * bitsandbytes layers as transformers saves them (bitsandbytes' Linear4bit / Linear8bitLt state
 * dicts). A layer left 16-bit (llm_int8_skip_modules, the LM head) has a plain `.weight`.
 */
export function bitsAndBytesReader(ckpt: Checkpoint, config: BitsAndBytesConfig): QuantizedLayerReader {
  return config.bits === 4 ? fourBitReader(ckpt, config) : eightBitReader(ckpt, config);
}

/**
 * 4-bit layers of [out, in]:
 *
 * - `weight` U8 [out · in / 2, 1]: the row-major weight's codes, element 2i in the high nibble of
 *   byte i and 2i + 1 in the low one;
 * - `weight.quant_map` F32 [16]: the code's values (NF4 or FP4);
 * - `weight.absmax` F32 [blocks]: each block of `blocksize` elements' absmax, or with double
 *   quantization U8 codes of (absmax - offset), decoded as `nested_quant_map[code] ·
 *   nested_absmax[block / nested_blocksize] + nested_offset` (float32, as bitsandbytes does);
 * - `weight.quant_state.bitsandbytes__nf4` (or `__fp4`) U8: JSON with quant_type, blocksize,
 *   dtype, shape and the nested_* fields.
 *
 * W[r, c] = quant_map[code(r, c)] · absmax[(r · in + c) / blocksize]. Keel keeps the codes and one
 * scale per block of a row, so a block must not straddle two rows (in a multiple of blocksize).
 */
function fourBitReader(ckpt: Checkpoint, config: BitsAndBytesConfig): QuantizedLayerReader {
  const stateName = (base: string) => `${base}.weight.quant_state.bitsandbytes__${config.quantType}`;
  const state = (base: string) => readQuantState(ckpt, stateName(base), config.quantType);
  return {
    holds: (base) => ckpt.has(`${base}.weight.absmax`),
    shape: (base) => state(base).shape,
    read(base: string): QuantizedWeight {
      const where = `${ckpt.dir}: bitsandbytes 4-bit layer ${base}`;
      if (!ckpt.has(stateName(base))) throw invalidModel(`${where}: no ${stateName(base)} (is its bnb_4bit_quant_type ${config.quantType}?)`);
      const s = state(base);
      const [rows, cols] = s.shape;
      if (cols % s.blocksize !== 0) throw invalidModel(`${where}: ${cols} input columns are not a multiple of blocksize ${s.blocksize} (blocks spanning two rows are not supported)`);
      const codes = ckpt.readRaw(`${base}.weight`);
      if (codes.dtype !== 'U8') throw invalidModel(`${where}: weight is ${codes.dtype}; Keel reads bnb_4bit_quant_storage uint8`);
      if (codes.data.length !== (rows * cols) / 2) throw invalidModel(`${where}: weight holds ${codes.data.length} bytes, expected ${(rows * cols) / 2} for [${rows}, ${cols}]`);
      const table = readFloats(ckpt, `${base}.weight.quant_map`, [16]);
      const expected = codeTable(config.quantType);
      if (table.some((v, i) => Math.abs(v - expected[i]) > 1e-6)) throw invalidModel(`${where}: quant_map is not bitsandbytes' ${config.quantType} table (custom code tables are not supported)`);
      const w = emptyQuantizedWeight(config.quantType, rows, cols, s.blocksize, false);
      w.scales.set(readAbsmax(ckpt, base, s, (rows * cols) / s.blocksize, where));
      for (let i = 0; i < codes.data.length; i++) {
        const flat = 2 * i;
        const row = Math.floor(flat / cols);
        const col = flat - row * cols;
        putCode(w, row, col, codes.data[i] >> 4);
        putCode(w, row, col + 1, codes.data[i] & 0xf);
      }
      return w;
    },
  };
}

interface QuantState {
  shape: [number, number];
  blocksize: number;
  nested: { blocksize: number; offset: number } | null;
}

function readQuantState(ckpt: Checkpoint, name: string, quantType: string): QuantState {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(new TextDecoder().decode(ckpt.readRaw(name).data)) as Record<string, unknown>;
  } catch (e) {
    throw invalidModel(`${ckpt.dir}: ${name} is not bitsandbytes' packed quant_state JSON (${(e as Error).message})`);
  }
  const where = `${ckpt.dir}: ${name}`;
  if (json.quant_type !== quantType) throw invalidModel(`${where}: quant_type ${JSON.stringify(json.quant_type)}, but the config says ${quantType}`);
  const shape = json.shape;
  if (!Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isInteger(d) && d > 0)) throw invalidModel(`${where}: shape must be [out, in] (got ${JSON.stringify(shape)})`);
  const blocksize = json.blocksize;
  if (!Number.isInteger(blocksize) || (blocksize as number) < 2) throw invalidModel(`${where}: blocksize must be an integer >= 2 (got ${JSON.stringify(blocksize)})`);
  let nested: QuantState['nested'] = null;
  if (json.nested_blocksize !== undefined) {
    if (!Number.isInteger(json.nested_blocksize) || typeof json.nested_offset !== 'number') throw invalidModel(`${where}: nested_blocksize and nested_offset must be numbers`);
    nested = { blocksize: json.nested_blocksize as number, offset: json.nested_offset };
  }
  return { shape: [shape[0], shape[1]], blocksize: blocksize as number, nested };
}

/** Each block's absmax, as float32: stored, or decoded from double quantization. */
function readAbsmax(ckpt: Checkpoint, base: string, s: QuantState, blocks: number, where: string): Float32Array {
  const name = `${base}.weight.absmax`;
  if (s.nested === null) return readFloats(ckpt, name, [blocks]);
  const codes = ckpt.readRaw(name);
  if (codes.dtype !== 'U8') throw invalidModel(`${where}: double-quantized absmax is ${codes.dtype}, expected U8 codes`);
  checkShape(ckpt, name, codes.shape, [blocks]);
  const nestedBlocks = Math.ceil(blocks / s.nested.blocksize);
  const nestedAbsmax = readFloats(ckpt, `${base}.weight.nested_absmax`, [nestedBlocks]);
  const nestedMap = readFloats(ckpt, `${base}.weight.nested_quant_map`, [256]);
  const offset = Math.fround(s.nested.offset);
  return Float32Array.from(codes.data, (code, i) => Math.fround(Math.fround(nestedMap[code] * nestedAbsmax[Math.floor(i / s.nested!.blocksize)]) + offset));
}

/**
 * 8-bit (LLM.int8()) layers: `weight` I8 [out, in] (bitsandbytes' CB), `SCB` F32 [out] (each row's
 * absmax), and optionally `weight_format` (0: row-major, the only layout saved since bitsandbytes
 * 0.45). W[r, c] = CB[r, c] · SCB[r] / 127, multiplied by LLM.int8()'s mixed decomposition.
 */
function eightBitReader(ckpt: Checkpoint, config: BitsAndBytesConfig): QuantizedLayerReader {
  return {
    holds: (base) => ckpt.has(`${base}.SCB`),
    shape: (base) => ckpt.info(`${base}.weight`).shape as [number, number],
    read(base: string): QuantizedWeight {
      const where = `${ckpt.dir}: bitsandbytes 8-bit layer ${base}`;
      const cb = ckpt.readRaw(`${base}.weight`);
      if (cb.dtype !== 'I8' || cb.shape.length !== 2) throw invalidModel(`${where}: weight is ${cb.dtype} [${cb.shape.join(', ')}], expected I8 [out, in]`);
      if (ckpt.has(`${base}.weight_format`)) {
        const format = ckpt.readRaw(`${base}.weight_format`).data[0];
        if (format !== 0) throw invalidModel(`${where}: weight_format ${format} is not supported (Keel reads 0, row-major)`);
      }
      const [rows, cols] = cb.shape;
      const scb = readFloats(ckpt, `${base}.SCB`, [rows]);
      const w = emptyQuantizedWeight('int8', rows, cols, cols, false);
      // Unsigned codes: the signed byte plus 128.
      for (let i = 0; i < cb.data.length; i++) w.codes[i] = cb.data[i] ^ 0x80;
      for (let r = 0; r < rows; r++) w.scales[r] = scb[r] / 127;
      w.mixedInt8 = { threshold: config.threshold };
      return w;
    },
  };
}
