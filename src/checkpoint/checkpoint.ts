import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HostTensor } from '../tensor/host-tensor.ts';
import type { Mxfp4Weight } from '../tensor/mxfp4.ts';
import type { LinearWeight, QuantizedWeight } from '../tensor/quantized-weight.ts';
import type { TensorSlice } from '../tensor/tensor-slice.ts';
import { invalidModel } from '../errors.ts';
import { SafetensorsFile, type RawTensor, type SafetensorsEntry } from './safetensors.ts';

const SINGLE_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';

/**
 * The tensors of a Hugging Face model directory: one `model.safetensors`, or shards listed by
 * `model.safetensors.index.json` (`weight_map`: tensor name -> shard file). Holds one file
 * descriptor per shard until `close`.
 */
export interface Checkpoint {
  readonly dir: string;
  readonly tensorNames: string[];
  has(name: string): boolean;
  /** dtype (as the file spells it) and shape from the header, without reading the data. */
  info(name: string): Pick<SafetensorsEntry, 'dtype' | 'shape'>;
  read(name: string): HostTensor;
  /** A slice of a tensor, reading only its bytes; absent where the source cannot (then `read` and cut). */
  readSlice?(name: string, slice: TensorSlice): HostTensor;
  /** The tensor's bytes whatever its dtype (packed integers, FP8 codes). */
  readRaw(name: string): RawTensor;
  /**
   * A linear layer's weight in the format the checkpoint holds it (quantized, or the 16-bit
   * tensor); absent for plain checkpoints, where it is `read`.
   */
  readLinear?(name: string): LinearWeight;
  /** A vocabulary matrix as the checkpoint holds it where Keel runs that quantized (WeightSource.readVocabulary: GGUF); absent: `read`. */
  readVocabulary?(name: string): QuantizedWeight | HostTensor;
  /**
   * A tensor the checkpoint stores as MXFP4 blocks (gpt-oss's experts), packed as stored: null
   * when it is 16-bit, absent for checkpoints with no MXFP4 tensors (src/checkpoint/quantization/mxfp4-checkpoint.ts).
   */
  readMxfp4?(name: string): Mxfp4Weight | null;
  /** `--quantization mxfp4`: routed MoE experts are quantized to MXFP4 as they load; absent: loaded as stored. */
  readonly expertQuantization?: 'mxfp4';
  /** WeightSource.quantizeLinear: `--quantization`'s quantizer of linear matrices no tensor name holds alone. */
  quantizeLinear?(matrix: HostTensor): QuantizedWeight;
  close(): void;
}

/**
 * A new checkpoint object over `ckpt`'s tensors as stored (names, headers, `read`, `readRaw`):
 * the base a wrapper adds its own readers to (`readLinear`, `readSlice`, ...). `ckpt`'s other
 * readers are left out.
 */
export function storedTensors(ckpt: Checkpoint): Checkpoint {
  return {
    get dir() {
      return ckpt.dir;
    },
    get tensorNames() {
      return ckpt.tensorNames;
    },
    has: (name) => ckpt.has(name),
    info: (name) => ckpt.info(name),
    read: (name) => ckpt.read(name),
    readRaw: (name) => ckpt.readRaw(name),
    close: () => ckpt.close(),
  };
}

export function openCheckpoint(dir: string): Checkpoint {
  if (existsSync(join(dir, INDEX_FILE))) return openSharded(dir);
  if (existsSync(join(dir, SINGLE_FILE))) {
    const file = SafetensorsFile.open(join(dir, SINGLE_FILE));
    return new SafetensorsCheckpoint(dir, [file], new Map([...file.tensors.keys()].map((name) => [name, file])));
  }
  throw invalidModel(`no ${SINGLE_FILE} or ${INDEX_FILE} in ${dir}${describeOtherWeights(dir)}`);
}

/** The names of the tensors of `dir`'s checkpoint (the index's, or the file header's), without opening the shards; null when it has no safetensors weights. */
export function checkpointTensorNames(dir: string): string[] | null {
  if (existsSync(join(dir, INDEX_FILE))) return Object.keys(readWeightMap(join(dir, INDEX_FILE)));
  if (!existsSync(join(dir, SINGLE_FILE))) return null;
  const file = SafetensorsFile.open(join(dir, SINGLE_FILE));
  try {
    return [...file.tensors.keys()];
  } finally {
    file.close();
  }
}

/**
 * The tensors of one safetensors file of `dir` that is not a model's (speculative heads ship as
 * `medusa_lm_head.safetensors`): the first of `fileNames` found, or `openCheckpoint`'s files.
 */
export function openCheckpointNamed(dir: string, fileNames: readonly string[]): Checkpoint {
  const found = fileNames.find((name) => existsSync(join(dir, name)));
  if (found === undefined) return openCheckpoint(dir);
  const file = SafetensorsFile.open(join(dir, found));
  return new SafetensorsCheckpoint(dir, [file], new Map([...file.tensors.keys()].map((name) => [name, file])));
}

class SafetensorsCheckpoint implements Checkpoint {
  readonly dir: string;
  private readonly files: SafetensorsFile[];
  private readonly fileOf: ReadonlyMap<string, SafetensorsFile>;

  constructor(dir: string, files: SafetensorsFile[], fileOf: ReadonlyMap<string, SafetensorsFile>) {
    this.dir = dir;
    this.files = files;
    this.fileOf = fileOf;
  }

  get tensorNames(): string[] {
    return [...this.fileOf.keys()];
  }

  has(name: string): boolean {
    return this.fileOf.has(name);
  }

  info(name: string): Pick<SafetensorsEntry, 'dtype' | 'shape'> {
    const { dtype, shape } = this.fileFor(name).entry(name);
    return { dtype, shape };
  }

  read(name: string): HostTensor {
    return this.fileFor(name).read(name);
  }

  readSlice(name: string, slice: TensorSlice): HostTensor {
    return this.fileFor(name).readSlice(name, slice);
  }

  readRaw(name: string): RawTensor {
    return this.fileFor(name).readRaw(name);
  }

  close(): void {
    for (const file of this.files) file.close();
  }

  private fileFor(name: string): SafetensorsFile {
    const file = this.fileOf.get(name);
    if (!file) throw invalidModel(`checkpoint ${this.dir} has no tensor "${name}"`);
    return file;
  }
}

function openSharded(dir: string): Checkpoint {
  const indexPath = join(dir, INDEX_FILE);
  const weightMap = readWeightMap(indexPath);
  const shards = new Map<string, SafetensorsFile>();
  try {
    const fileOf = new Map<string, SafetensorsFile>();
    for (const [name, shardName] of Object.entries(weightMap)) {
      let shard = shards.get(shardName);
      if (!shard) {
        const shardPath = join(dir, shardName);
        if (!existsSync(shardPath)) throw invalidModel(`${indexPath} lists shard ${shardName}, which is missing from ${dir}`);
        shard = SafetensorsFile.open(shardPath);
        shards.set(shardName, shard);
      }
      if (!shard.tensors.has(name)) throw invalidModel(`${indexPath} places tensor "${name}" in ${shardName}, which does not contain it`);
      fileOf.set(name, shard);
    }
    return new SafetensorsCheckpoint(dir, [...shards.values()], fileOf);
  } catch (error) {
    for (const shard of shards.values()) shard.close();
    throw error;
  }
}

function readWeightMap(indexPath: string): Record<string, string> {
  let index: unknown;
  try {
    index = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (error) {
    throw invalidModel(`cannot read ${indexPath}: ${(error as Error).message}`);
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || !Object.values(weightMap).every((v) => typeof v === 'string')) {
    throw invalidModel(`${indexPath} has no "weight_map" object of tensor name -> shard file`);
  }
  return weightMap as Record<string, string>;
}

function describeOtherWeights(dir: string): string {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return ' (the directory cannot be read)';
  }
  const pytorch = names.filter((n) => n.endsWith('.bin') || n.endsWith('.pt') || n.endsWith('.pth'));
  const found = pytorch.length > 0 ? `; found ${pytorch.slice(0, 3).join(', ')}` : '';
  return `${found}. Keel loads safetensors only: PyTorch .bin/.pt checkpoints are not supported (convert them with safetensors' convert script or save_pretrained(safe_serialization=True))`;
}
