import { invalidArgument } from '../../errors.ts';
import { float32Tensor } from '../../tensor/host-ops.ts';
import { hostTensorToFloat32 } from '../../tensor/host-dtype.ts';
import type { HostTensor } from '../../tensor/host-tensor.ts';
import { quantizeRoundToNearest, type LoadTimeQuantization } from '../../tensor/quantize-rtn.ts';
import { dequantizeWeight, isAqlm, type LinearWeight } from '../../tensor/quantized-weight.ts';
import { storedTensors, type Checkpoint } from '../checkpoint.ts';
import type { RawTensor, SafetensorsEntry } from '../safetensors.ts';
import { aqlmReader } from './aqlm.ts';
import { awqReader } from './awq.ts';
import { bitsAndBytesReader } from './bitsandbytes.ts';
import { compressedTensorsReader } from './compressed-tensors.ts';
import { fp8Reader } from './fp8-checkpoint.ts';
import { gptqReader } from './gptq.ts';
import { mxfp4Checkpoint } from './mxfp4-checkpoint.ts';
import type { QuantizedLayerReader } from './layer-reader.ts';
import type { CheckpointQuantization } from './quantization-config.ts';

/**
 * A quantized checkpoint seen as the 16-bit one it stands for: a quantized layer's `.weight` is
 * there with its [out, in] shape, `readLinear` gives it in Keel's quantized layout, and `read`
 * gives its dequantized values (float32), for the layers Keel keeps 16-bit (the LM head, MoE
 * experts in a form the expert kernels do not take, DeepSeek's absorbed kv_b_proj).
 */
export function quantizedCheckpoint(inner: Checkpoint, config: CheckpointQuantization): Checkpoint {
  return config.method === 'mxfp4' ? mxfp4Checkpoint(inner) : new ReaderCheckpoint(inner, layerReader(inner, config));
}

function layerReader(ckpt: Checkpoint, config: Exclude<CheckpointQuantization, { method: 'mxfp4' }>): QuantizedLayerReader {
  switch (config.method) {
    case 'gptq':
      return gptqReader(ckpt, config);
    case 'awq':
      return awqReader(ckpt, config);
    case 'compressed-tensors':
      return compressedTensorsReader(ckpt, config);
    case 'fp8':
      return fp8Reader(ckpt, config);
    case 'bitsandbytes':
      return bitsAndBytesReader(ckpt, config);
    case 'aqlm':
      return aqlmReader(ckpt, config);
  }
}

class ReaderCheckpoint implements Checkpoint {
  private readonly inner: Checkpoint;
  private readonly reader: QuantizedLayerReader;

  constructor(inner: Checkpoint, reader: QuantizedLayerReader) {
    this.inner = inner;
    this.reader = reader;
  }

  get dir(): string {
    return this.inner.dir;
  }

  get tensorNames(): string[] {
    return this.inner.tensorNames;
  }

  has(name: string): boolean {
    return this.quantizedBase(name) !== null || this.inner.has(name);
  }

  info(name: string): Pick<SafetensorsEntry, 'dtype' | 'shape'> {
    const base = this.quantizedBase(name);
    return base === null ? this.inner.info(name) : { dtype: 'F32', shape: this.reader.shape(base) };
  }

  read(name: string): HostTensor {
    const base = this.quantizedBase(name);
    if (base === null) return this.inner.read(name);
    const w = this.reader.read(base);
    return float32Tensor(dequantizeWeight(w), [w.rows, w.cols]);
  }

  readLinear(name: string): LinearWeight {
    const base = this.quantizedBase(name);
    return base === null ? this.inner.read(name) : this.reader.read(base);
  }

  readRaw(name: string): RawTensor {
    return this.inner.readRaw(name);
  }

  close(): void {
    this.inner.close();
  }

  /** The layer `name` is the weight of, when the checkpoint holds it quantized. */
  private quantizedBase(name: string): string | null {
    if (!name.endsWith('.weight')) return null;
    const base = name.slice(0, -'.weight'.length);
    return this.reader.holds(base) ? base : null;
  }
}

/**
 * A 16-bit checkpoint quantized as it is read (`--quantization`), round to nearest: its linear
 * weights (src/tensor/quantize-rtn.ts; routed MoE experts' per-expert matrices among them, and
 * fused expert tensors' through `quantizeLinear`, once the MoE layer has them in its layout), or
 * with `mxfp4` its routed MoE experts only, which the MoE
 * layer quantizes once it has them in its own layout (`expertQuantization`). Every other tensor
 * reads as stored.
 */
export function quantizeAtLoad(inner: Checkpoint, method: LoadTimeQuantization): Checkpoint {
  if (isAqlm(method)) {
    // AQLM's codes and codebooks come from a search of hours over a model's layers, not a rounding.
    throw invalidArgument(
      `--quantization ${method} makes random AQLM weights for --load-format dummy only: quantize ${inner.dir} with \`keel quantize --method vq --codebooks ${method.slice('aqlm-'.length)}\` (AQLM's codebook search, hours for an 8B model) and load that checkpoint, or load an AQLM checkpoint, without --quantization`,
    );
  }
  const stored = storedTensors(inner);
  if (method === 'mxfp4') return Object.assign(stored, { expertQuantization: 'mxfp4' as const });
  const quantizeLinear = (t: HostTensor) => {
    const [rows, cols] = t.shape;
    return quantizeRoundToNearest(hostTensorToFloat32(t), rows, cols, method);
  };
  return Object.assign(stored, { readLinear: (name: string) => quantizeLinear(inner.read(name)), quantizeLinear });
}
