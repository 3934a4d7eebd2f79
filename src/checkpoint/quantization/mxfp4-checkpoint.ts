import { invalidModel } from '../../errors.ts';
import { float32Tensor } from '../../tensor/host-ops.ts';
import type { HostTensor } from '../../tensor/host-tensor.ts';
import { checkMxfp4, dequantizeMxfp4, MXFP4_BLOCK, type Mxfp4Weight } from '../../tensor/mxfp4.ts';
import type { Checkpoint } from '../checkpoint.ts';
import type { SafetensorsEntry } from '../safetensors.ts';

const BLOCKS = '_blocks';
const SCALES = '_scales';

/**
 * An MXFP4 checkpoint (`quant_method: mxfp4`, gpt-oss) seen as the 16-bit one it stands for. Each
 * pair `NAME_blocks` U8 [...lead, rows, cols / 32, 16] and `NAME_scales` U8 [...lead, rows,
 * cols / 32] stands for tensor NAME with the shape transformers dequantizes it to, the last two
 * dimensions swapped ([...lead, cols, rows]: gpt-oss's 16-bit experts are input-major, while the
 * blocks run along the input). `read(NAME)` gives those values (float32, exact), `readMxfp4(NAME)`
 * the packed weight as stored ([...lead, rows, cols], src/tensor/mxfp4.ts). Every other tensor
 * reads as stored: the checkpoint's linear layers are 16-bit (`modules_to_not_convert`).
 */
export function mxfp4Checkpoint(inner: Checkpoint): Checkpoint {
  const packed = new Set(inner.tensorNames.filter((n) => n.endsWith(BLOCKS) && inner.has(n.slice(0, -BLOCKS.length) + SCALES)).map((n) => n.slice(0, -BLOCKS.length)));
  const readPacked = (name: string): Mxfp4Weight => {
    const blocks = inner.readRaw(name + BLOCKS);
    const scales = inner.readRaw(name + SCALES);
    const dims = blocks.shape;
    const rows = dims.slice(0, -2);
    const where = `${inner.dir}: ${name}${BLOCKS} [${dims.join(', ')}] ${blocks.dtype} and ${name}${SCALES} [${scales.shape.join(', ')}] ${scales.dtype}`;
    const fits = dims.length >= 3 && dims[dims.length - 1] === MXFP4_BLOCK / 2 && scales.shape.length === dims.length - 1 && scales.shape.every((d, i) => d === dims[i]);
    if (blocks.dtype !== 'U8' || scales.dtype !== 'U8' || !fits) {
      throw invalidModel(`${where} are not MXFP4 blocks U8 [..., rows, cols / 32, 16] with scales U8 [..., rows, cols / 32]`);
    }
    const w: Mxfp4Weight = { shape: [...rows, dims[dims.length - 2] * MXFP4_BLOCK], blocks: blocks.data, scales: scales.data };
    try {
      checkMxfp4(w, name);
    } catch (e) {
      throw invalidModel(`${inner.dir}: ${(e as Error).message}`);
    }
    return w;
  };
  const transposedShape = (name: string): number[] => {
    const dims = inner.info(name + BLOCKS).shape;
    const lead = dims.slice(0, -3);
    return [...lead, dims[dims.length - 2] * MXFP4_BLOCK, dims[dims.length - 3]];
  };
  return {
    get dir() {
      return inner.dir;
    },
    get tensorNames() {
      return [...inner.tensorNames.filter((n) => !packed.has(stripSuffix(n))), ...packed];
    },
    has: (name) => packed.has(name) || inner.has(name),
    info: (name): Pick<SafetensorsEntry, 'dtype' | 'shape'> => (packed.has(name) ? { dtype: 'F32', shape: transposedShape(name) } : inner.info(name)),
    read: (name): HostTensor => (packed.has(name) ? transposeLastTwo(readPacked(name)) : inner.read(name)),
    readRaw: (name) => inner.readRaw(name),
    readMxfp4: (name) => (packed.has(name) ? readPacked(name) : null),
    close: () => inner.close(),
  };
}

function stripSuffix(name: string): string {
  if (name.endsWith(BLOCKS)) return name.slice(0, -BLOCKS.length);
  if (name.endsWith(SCALES)) return name.slice(0, -SCALES.length);
  return name;
}

/** The dequantized values of a [...lead, rows, cols] weight, as [...lead, cols, rows]. */
function transposeLastTwo(w: Mxfp4Weight): HostTensor {
  const values = dequantizeMxfp4(w);
  const [rows, cols] = w.shape.slice(-2);
  const out = new Float32Array(values.length);
  for (let m = 0; m < values.length / (rows * cols); m++) {
    const base = m * rows * cols;
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[base + c * rows + r] = values[base + r * cols + c];
  }
  return float32Tensor(out, [...w.shape.slice(0, -2), cols, rows]);
}
