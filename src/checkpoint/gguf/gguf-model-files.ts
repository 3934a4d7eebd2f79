import type { Checkpoint } from '../checkpoint.ts';
import type { JsonDocument, ModelFiles, TokenizerDocuments } from '../model-files.ts';
import { hostTensorToFloat32 } from '../../tensor/host-dtype.ts';
import { toHostTensor } from './dequantize.ts';
import { ggufArchitecture, mapTensors, ROPE_FREQS, type TensorSource } from './gguf-architectures.ts';
import { GgufCheckpoint } from './gguf-checkpoint.ts';
import { ggufConfig } from './gguf-config.ts';
import { GgufFile } from './gguf-file.ts';
import { ggufTokenizer } from './gguf-tokenizer.ts';

/**
 * A GGUF file read as a Hugging Face model: config.json from its hyperparameters, the tokenizer
 * from its vocabulary, its tensors under Hugging Face's names. The end-of-sequence tokens are
 * config.json's, so there is no generation_config.json. Everything but the tensors' data is
 * derived at open, so a file Keel cannot run fails before any weight is read.
 */
export class GgufModelFiles implements ModelFiles {
  readonly path: string;
  readonly format = 'gguf';
  private readonly file: GgufFile;
  private readonly sources: ReadonlyMap<string, TensorSource>;
  private readonly configJson: Record<string, unknown>;
  private readonly tokenizerDocuments: TokenizerDocuments | null;

  private constructor(file: GgufFile) {
    this.path = file.path;
    this.file = file;
    const m = file.metadata;
    const arch = ggufArchitecture(m);
    const heads = { q: m.uint(`${arch.name}.attention.head_count`), kv: m.uint(`${arch.name}.attention.head_count_kv`, m.uint(`${arch.name}.attention.head_count`)) };
    this.sources = mapTensors(arch, file.tensors, heads, file.path);
    const freqs = file.tensors.get(ROPE_FREQS);
    const freqFactors = freqs === undefined ? null : readFloats(file, freqs.name);
    this.configJson = ggufConfig(m, arch, this.sources, freqFactors);
    this.tokenizerDocuments = ggufTokenizer(m);
  }

  static open(path: string): GgufModelFiles {
    return new GgufModelFiles(GgufFile.open(path));
  }

  config(): JsonDocument {
    return { json: this.configJson, source: `the metadata of ${this.path}` };
  }

  generationConfig(): JsonDocument | null {
    return null;
  }

  tokenizer(): TokenizerDocuments | null {
    return this.tokenizerDocuments;
  }

  openCheckpoint(): Checkpoint {
    return new GgufCheckpoint(this.file, this.sources);
  }
}

/** A small tensor's values as float32 (rope_freqs.weight); the file is closed again after. */
function readFloats(file: GgufFile, name: string): Float32Array {
  const info = file.tensor(name);
  try {
    return hostTensorToFloat32(toHostTensor(info.type, file.readBytes(name), [info.dims.reduce((a, b) => a * b, 1)], 'f32'));
  } finally {
    file.close();
  }
}
