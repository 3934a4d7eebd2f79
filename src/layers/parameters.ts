import type { Backend, WeightUploaderOps } from '../backend/backend.ts';
import type { LoraAdapter } from '../tensor/lora-adapter.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import type { Mxfp4Weight } from '../tensor/mxfp4.ts';
import type { LinearWeight, QuantizedWeight } from '../tensor/quantized-weight.ts';
import type { StoredSize } from '../tensor/stored-size.ts';
import type { TensorSlice } from '../tensor/tensor-slice.ts';

/** A checkpoint tensor a layer reads, with the shape its config implies. */
export interface ParameterSpec {
  name: string;
  shape: number[];
  /**
   * The shape a checkpoint may store it in instead (the same elements in another order, such as a
   * transposed stack of experts), which the layer tells apart by the shape it reads. Absent: `shape` only.
   */
  orShape?: number[];
  /**
   * How much of it a step reads, for cost models: `rows`, only its tokens' rows (an embedding
   * table); `expert`, all of it but only when a token routes to this expert. Absent: all of it.
   */
  access?: { kind: 'rows' } | { kind: 'expert'; numExperts: number; topK: number };
  /**
   * Once a layer has loaded it on one device, what it holds of it there in the format it chose
   * (quantized codes and scales, 2:4, MXFP4, or 16-bit: `storedSize`). Absent: the tensor's
   * elements in the backend's weight dtype (not loaded yet, or loaded as a tensor-parallel shard,
   * which is 16-bit).
   */
  stored?: StoredSize;
}

/** Where loading reads checkpoint tensors (a checkpoint, or random weights of the same shapes). */
export interface WeightSource {
  read(name: string): HostTensor;
  /**
   * A linear layer's weight `name` ([out, in], ending in `.weight`) in the format the source holds
   * it: a quantized checkpoint's codes and scales (GPTQ, AWQ, compressed-tensors, FP8) repacked in
   * Keel's layout, a 16-bit weight quantized at load (`--quantization`), or the 16-bit tensor.
   * Absent: `read` (16-bit). `read` of a quantized weight gives its dequantized values.
   */
  readLinear?(name: string): LinearWeight;
  /**
   * A vocabulary matrix (the token embedding or the LM head, [vocab, hidden]) in the format the
   * source stores it where that is a quantized layout the embedding gather and the quantized
   * kernels take (a GGUF file's Q8_0, Q6_K, Q4_0, Q4_1 or Q4_K blocks, repacked), else as `read`
   * gives it. Absent: `read` (16-bit), as for every checkpoint quantized or not in Hugging Face's
   * formats, whose vocabulary matrices run 16-bit (`--quantization` leaves them so, as vLLM does).
   */
  readVocabulary?(name: string): QuantizedWeight | HostTensor;
  /**
   * A tensor the checkpoint may hold and the model runs without (an fp8 KV cache's k_scale), or
   * null when it does not. Absent: no such tensors (random weights).
   */
  readOptional?(name: string): HostTensor | null;
  /** A slice of a tensor, reading only its bytes where the source can (safetensors); absent: `read` and cut (shard.ts). */
  readSlice?(name: string, slice: TensorSlice): HostTensor;
  /** The tensor-parallel shard to load (docs/parallelism.md); absent: the whole model. */
  shard?: TensorParallelShard;
  /**
   * A tensor the source stores as MXFP4 (gpt-oss's fused experts), packed as stored
   * ([...lead, out, in], src/tensor/mxfp4.ts), or null when it is 16-bit; absent: none is. `read`
   * of such a tensor gives its dequantized values in the 16-bit checkpoint's shape.
   */
  readMxfp4?(name: string): Mxfp4Weight | null;
  /** `mxfp4`: quantize routed MoE experts to MXFP4 as they load (`--quantization mxfp4`). */
  expertQuantization?: 'mxfp4';
  /**
   * `--quantization fp8|int8|int4|nf4|llm-int8`: quantizes a linear layer's [out, in] matrix that
   * the checkpoint holds inside a larger tensor (fused MoE experts, [experts · out, in] stacked
   * along the rows), as `readLinear` quantizes those it holds under their own name; every format
   * is row-wise, so a stack quantizes as its matrices would one by one. Absent: such matrices
   * stay 16-bit.
   */
  quantizeLinear?(matrix: HostTensor): QuantizedWeight;
}

/**
 * Which part of each layer a device holds: rank `rank` of `size` devices splits every layer along
 * its shard axis (layers/shard.ts), and with `expertParallel` places whole MoE experts on devices
 * instead of splitting each expert.
 */
export interface TensorParallelShard {
  rank: number;
  size: number;
  expertParallel: boolean;
}

/** Only uploading is needed to load a layer, so tests can pass a recorder instead of a whole backend. */
export type WeightUploader = WeightUploaderOps;

/**
 * A layer owns its weights: it names the checkpoint tensors it needs (checked before any is read),
 * then reads them and puts them on the device in the format its kernels want.
 */
export interface Layer {
  parameters(): ParameterSpec[];
  load(source: WeightSource, uploader: WeightUploader): void;
  /** The linear layers inside it that LoRA adapters may adapt (docs/lora.md); absent: none. */
  loraTargets?(): LoraTarget[];
}

/** A linear layer as the engine's LoRA registry and slots drive it (src/layers/linear.ts implements it). */
export interface LoraTarget {
  /** The adapter module names it answers to (q_proj, k_proj, ...), one per part. */
  readonly loraModules: string[];
  /** Each part's output rows, in the order of `loraModules`. */
  readonly parts: readonly { readonly rows: number }[];
  readonly inFeatures: number;
  enableLora(b: Backend, slots: number, maxRank: number): void;
  checkLoraAdapter(adapter: LoraAdapter, what: string): void;
  setLoraSlot(b: Backend, slot: number, adapter: LoraAdapter): void;
}

/** The parameters of several layers, in load order. */
export function parametersOf(layers: readonly Layer[]): ParameterSpec[] {
  return layers.flatMap((layer) => layer.parameters());
}

/** Loads several layers in order. */
export function loadLayers(layers: readonly Layer[], source: WeightSource, uploader: WeightUploader): void {
  for (const layer of layers) layer.load(source, uploader);
}

/** A layer made of other layers (a decoder layer, a draft head): its parameters and its loading are theirs, in order. */
export abstract class ComposedLayer implements Layer {
  /** The layers it is made of. */
  protected abstract get sublayers(): Layer[];

  parameters(): ParameterSpec[] {
    return parametersOf(this.sublayers);
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    loadLayers(this.sublayers, source, uploader);
  }
}

/** A weight of a layer that has not been loaded yet: reading it is a wiring bug. */
export function loaded<T>(value: T | null, what: string): T {
  if (value === null) throw new Error(`${what} is used before its weights were loaded`);
  return value;
}
