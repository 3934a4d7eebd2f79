import { invalidModel } from '../../errors.ts';
import type { HostTensor } from '../../tensor/host-tensor.ts';
import { DTYPE_BYTES } from '../../tensor/host-dtype.ts';
import type { Checkpoint } from '../checkpoint.ts';
import type { RawTensor } from '../safetensors.ts';
import type { TensorSource } from './gguf-architectures.ts';
import { toHostTensor } from './dequantize.ts';
import type { GgufFile } from './gguf-file.ts';

/**
 * A GGUF file's tensors under their Hugging Face names and shapes, as a Checkpoint: F32, F16 and
 * BF16 as stored, quantized types dequantized to bfloat16 as they are read, an expert's slice of a
 * stacked tensor read alone, and q/k rows put back into Hugging Face's order.
 */
export class GgufCheckpoint implements Checkpoint {
  readonly dir: string;
  private readonly file: GgufFile;
  private readonly sources: ReadonlyMap<string, TensorSource>;

  constructor(file: GgufFile, sources: ReadonlyMap<string, TensorSource>) {
    this.dir = file.path;
    this.file = file;
    this.sources = sources;
  }

  get tensorNames(): string[] {
    return [...this.sources.keys()];
  }

  has(name: string): boolean {
    return this.sources.has(name);
  }

  info(name: string): { dtype: string; shape: number[] } {
    const source = this.source(name);
    return { dtype: source.tensor.type.name, shape: source.shape.slice() };
  }

  read(name: string): HostTensor {
    const { tensor, shape, unpairHeads } = this.source(name);
    const host = toHostTensor(tensor.type, this.storedBytes(name), shape.slice(), 'bf16');
    return unpairHeads === null ? host : unpairRows(host, unpairHeads, name, this.dir);
  }

  /** The tensor's blocks as the file stores them (dtype: the ggml type's name), its q/k rows in llama.cpp's order. */
  readRaw(name: string): RawTensor {
    const { tensor, shape } = this.source(name);
    return { dtype: tensor.type.name, shape: shape.slice(), data: this.storedBytes(name) };
  }

  close(): void {
    this.file.close();
  }

  /** The whole tensor, or an expert's slice of a stacked one. */
  private storedBytes(name: string): Uint8Array {
    const { tensor, expert } = this.source(name);
    if (expert === null) return this.file.readBytes(tensor.name);
    const expertBytes = tensor.byteLength / tensor.dims[2];
    return this.file.readBytes(tensor.name, expert * expertBytes, expertBytes);
  }

  private source(name: string): TensorSource {
    const source = this.sources.get(name);
    if (source === undefined) throw invalidModel(`${this.dir} has no tensor that maps to ${name}`);
    return source;
  }
}

/**
 * llama.cpp's converter stores row j of a q/k head as row 2j (j < d/2) or 2(j − d/2) + 1: the
 * rotated pairs adjacent for its RoPE. Row 2i + s of a head goes back to row i + s·d/2. Works on
 * weights [heads·d, cols] and biases [heads·d] alike.
 */
function unpairRows(t: HostTensor, heads: number, name: string, source: string): HostTensor {
  const rows = t.shape[0];
  const headDim = rows / heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw invalidModel(`${source}: ${name} has ${rows} rows, not ${heads} heads of an even size`);
  const rowBytes = (t.data.length / rows) | 0;
  if (rowBytes * rows !== t.data.length || rowBytes % DTYPE_BYTES[t.dtype] !== 0) throw new Error(`${name}: ${t.data.length} bytes do not split into ${rows} rows`);
  const out = new Uint8Array(t.data.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let s = 0; s < 2; s++) {
        const from = h * headDim + 2 * i + s;
        const to = h * headDim + i + s * half;
        out.set(t.data.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes);
      }
    }
  }
  return { ...t, data: out };
}
