import { invalidModel } from '../../errors.ts';
import type { Checkpoint } from '../checkpoint.ts';
import type { JsonDocument, ModelFiles, TokenizerDocuments } from '../model-documents.ts';
import { hostTensorToFloat32 } from '../../tensor/host-dtype.ts';
import { toHostTensor } from './dequantize.ts';
import { ggufArchitecture, mapTensors, ROPE_FACTORS, ROPE_FREQS, type TensorSource } from './gguf-architectures.ts';
import { GgufCheckpoint } from './gguf-checkpoint.ts';
import { ggufConfig, type ConfigTensors } from './gguf-config.ts';
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
    this.configJson = ggufConfig(m, arch, this.sources, configTensors(file));
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

  tensorNames(): readonly string[] {
    return [...this.sources.keys()];
  }
}

/** The small tensors the config is made from, read as float32; the file is closed again after. */
function configTensors(file: GgufFile): ConfigTensors {
  const floats = (name: string) => {
    const info = file.tensors.get(name);
    return info === undefined ? null : hostTensorToFloat32(toHostTensor(info.type, file.readBytes(name), [info.dims.reduce((a, b) => a * b, 1)], 'f32'));
  };
  try {
    const [long, short] = [floats(ROPE_FACTORS.long), floats(ROPE_FACTORS.short)];
    if ((long === null) !== (short === null)) throw invalidModel(`${file.path} has only one of ${ROPE_FACTORS.long} and ${ROPE_FACTORS.short}`);
    return { ropeFreqs: floats(ROPE_FREQS), ropeFactors: long === null || short === null ? null : { long, short } };
  } finally {
    file.close();
  }
}
