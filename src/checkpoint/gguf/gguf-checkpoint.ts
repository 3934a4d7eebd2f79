import { invalidModel } from '../../errors.ts';
import type { HostTensor, WeightDType } from '../../tensor/host-tensor.ts';
import { selectQuantizedRows, type QuantizedWeight } from '../../tensor/quantized-weight.ts';
import { DTYPE_BYTES, float32ToHostTensor, hostTensorToFloat32 } from '../../tensor/host-dtype.ts';
import type { Checkpoint } from '../checkpoint.ts';
import type { RawTensor } from '../safetensors.ts';
import type { TensorSource } from './gguf-architectures.ts';
import { isQuantized, toHostTensor } from './dequantize.ts';
import { repackable, repackBlocks } from './repack-blocks.ts';
import type { GgufFile, GgufTensorInfo } from './gguf-file.ts';

/**
 * A GGUF file's tensors under their Hugging Face names and shapes, as a Checkpoint: F32, F16 and
 * BF16 as stored, quantized types dequantized to bfloat16 as they are read, or for a linear
 * layer's weight (`readLinear`) and the token embedding and LM head (`readVocabulary`) Q8_0, Q4_0,
 * Q4_1, Q4_K and Q6_K repacked into Keel's int8/int4 layouts
 * (repack-blocks.ts; exact, where `read` rounds to bfloat16), an expert's slice of a
 * stacked tensor read alone, and what llama.cpp's converter changed undone: q/k rows put back into
 * Hugging Face's order, Gemma's norms without the 1 added, DeepSeek's kv_b_proj joined again.
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
    const source = this.source(name);
    const { tensor, shape, unpairHeads, offset, valueHalf } = source;
    if (valueHalf !== null) return this.joinKvB(name, source, valueHalf);
    let host = toHostTensor(tensor.type, this.storedBytes(name), shape.slice(), 'bf16');
    if (unpairHeads !== null) host = unpairRows(host, unpairHeads, name, this.dir);
    if (offset !== 0) host = float32ToHostTensor(hostTensorToFloat32(host).map((v) => v - offset), host.dtype, host.shape);
    return host;
  }

  /** A linear layer's weight: repacked into Keel's quantized layout when its type has one, else as `read` gives it. */
  readLinear(name: string): QuantizedWeight | HostTensor {
    const source = this.source(name);
    const { tensor, shape, unpairHeads, offset, valueHalf } = source;
    if (!repackable(tensor.type) || offset !== 0 || valueHalf !== null) return this.read(name);
    const [rows, cols] = shape;
    const w = repackBlocks(tensor.type, this.storedBytes(name), rows, cols);
    return unpairHeads === null ? w : selectQuantizedRows(w, unpairedOrder(rows, unpairHeads, name, this.dir));
  }

  /**
   * The token embedding or LM head, as a linear layer's weight is read: the LM head is a linear
   * layer, and the embedding gather dequantizes the rows it looks up from the same layouts.
   */
  readVocabulary(name: string): QuantizedWeight | HostTensor {
    return this.readLinear(name);
  }

  /**
   * The tensor's blocks as the file stores them (dtype: the ggml type's name); a tensor the
   * converter changed (reordered, offset, split) as `read` gives it, since its blocks are not the
   * Hugging Face tensor's.
   */
  readRaw(name: string): RawTensor {
    const { tensor, shape, unpairHeads, offset, valueHalf } = this.source(name);
    if (unpairHeads === null && offset === 0 && valueHalf === null) return { dtype: tensor.type.name, shape: shape.slice(), data: this.storedBytes(name) };
    const host = this.read(name);
    return { dtype: host.dtype.toUpperCase(), shape: host.shape, data: host.data };
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

  /** kv_b_proj row h·(nope + value) + n is attn_k_b's [h, :, n] (transposed back), row h·(nope + value) + nope + j attn_v_b's [h, j, :]. */
  private joinKvB(name: string, source: TensorSource, valueHalf: GgufTensorInfo): HostTensor {
    const [nope, latent, heads] = source.tensor.dims;
    const value = valueHalf.dims[1];
    const floats = (t: GgufTensorInfo) => hostTensorToFloat32(toHostTensor(t.type, this.file.readBytes(t.name), [t.dims.reduce((a, b) => a * b, 1)], 'f32'));
    const [keys, values] = [floats(source.tensor), floats(valueHalf)];
    const out = new Float32Array(heads * (nope + value) * latent);
    for (let h = 0; h < heads; h++) {
      const first = h * (nope + value);
      for (let n = 0; n < nope; n++) {
        for (let l = 0; l < latent; l++) out[(first + n) * latent + l] = keys[(h * latent + l) * nope + n];
      }
      out.set(values.subarray(h * value * latent, (h + 1) * value * latent), (first + nope) * latent);
    }
    const types = [source.tensor.type, valueHalf.type];
    // Both halves 16/32-bit of one type keep it; anything quantized is dequantized to bfloat16, as every tensor is.
    const dtype: WeightDType = types.some(isQuantized) || types[0].name !== types[1].name ? 'bf16' : (types[0].name.toLowerCase() as WeightDType);
    if (out.length !== source.shape[0] * source.shape[1]) throw new Error(`${name}: halves of ${out.length} values for shape [${source.shape.join(', ')}]`);
    return float32ToHostTensor(out, dtype, source.shape.slice());
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
  const order = unpairedOrder(rows, heads, name, source);
  const rowBytes = (t.data.length / rows) | 0;
  if (rowBytes * rows !== t.data.length || rowBytes % DTYPE_BYTES[t.dtype] !== 0) throw new Error(`${name}: ${t.data.length} bytes do not split into ${rows} rows`);
  const out = new Uint8Array(t.data.length);
  order.forEach((from, to) => out.set(t.data.subarray(from * rowBytes, (from + 1) * rowBytes), to * rowBytes));
  return { ...t, data: out };
}

/** For each Hugging Face row, the stored row it comes from (unpairRows). */
function unpairedOrder(rows: number, heads: number, name: string, source: string): Int32Array {
  const headDim = rows / heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw invalidModel(`${source}: ${name} has ${rows} rows, not ${heads} heads of an even size`);
  const order = new Int32Array(rows);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let s = 0; s < 2; s++) order[h * headDim + i + s * half] = h * headDim + 2 * i + s;
    }
  }
  return order;
}
