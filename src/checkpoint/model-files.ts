import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { invalidModel } from '../errors.ts';
import { checkpointTensorNames, openCheckpoint, type Checkpoint } from './checkpoint.ts';
import { GgufModelFiles } from './gguf/gguf-model-files.ts';
import { readJsonFile } from './json-file.ts';
import type { JsonDocument, ModelFiles, TokenizerDocuments } from './model-documents.ts';

/** A path ending in .gguf (any case) names a GGUF file; anything else a model directory. */
export function isGgufPath(path: string): boolean {
  return path.toLowerCase().endsWith('.gguf');
}

/** The files of the model at `path`: a Hugging Face model directory or a GGUF file. */
export function openModelFiles(path: string): ModelFiles {
  if (isGgufPath(path) && existsSync(path) && statSync(path).isFile()) return GgufModelFiles.open(path);
  return new DirectoryModelFiles(path);
}

class DirectoryModelFiles implements ModelFiles {
  readonly path: string;
  readonly format = 'huggingface';

  constructor(dir: string) {
    this.path = dir;
  }

  config(): JsonDocument {
    const path = join(this.path, 'config.json');
    return { json: readJsonFile(path), source: path };
  }

  generationConfig(): JsonDocument | null {
    const path = join(this.path, 'generation_config.json');
    return existsSync(path) ? { json: readJsonFile(path), source: path } : null;
  }

  tokenizer(): TokenizerDocuments | null {
    const jsonPath = join(this.path, 'tokenizer.json');
    if (!existsSync(jsonPath)) return null;
    const configPath = join(this.path, 'tokenizer_config.json');
    const config = existsSync(configPath) ? readJsonFile(configPath) : {};
    if (typeof config !== 'object' || config === null || Array.isArray(config)) throw invalidModel(`${configPath} must hold a JSON object`);
    const jinjaPath = join(this.path, 'chat_template.jinja');
    return {
      tokenizer: { json: readJsonFile(jsonPath), source: jsonPath },
      config: config as Record<string, unknown>,
      configSource: configPath,
      chatTemplateFile: existsSync(jinjaPath) ? { text: readFileSync(jinjaPath, 'utf8'), source: jinjaPath } : null,
    };
  }

  openCheckpoint(): Checkpoint {
    return openCheckpoint(this.path);
  }

  tensorNames(): readonly string[] | null {
    return checkpointTensorNames(this.path);
  }
}
