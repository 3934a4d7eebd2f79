import type { Checkpoint } from './checkpoint.ts';

/** A JSON document of a model and what errors call it (its path, or the GGUF file it was derived from). */
export interface JsonDocument {
  json: unknown;
  source: string;
}

/** What a tokenizer is built from, in Hugging Face's files' terms. */
export interface TokenizerDocuments {
  /** tokenizer.json. */
  tokenizer: JsonDocument;
  /** tokenizer_config.json's object ({} when the model has none). */
  config: Record<string, unknown>;
  configSource: string;
  /** chat_template.jinja, which wins over tokenizer_config.json's chat_template, when the model has one. */
  chatTemplateFile: { text: string; source: string } | null;
}

/**
 * A model's files as Keel reads them, in Hugging Face's terms whatever holds them: a model
 * directory (config.json, generation_config.json, tokenizer files, safetensors) or a GGUF file,
 * whose metadata is turned into the same documents and whose tensors get Hugging Face's names.
 */
export interface ModelFiles {
  /** The directory or the .gguf file. */
  readonly path: string;
  readonly format: 'huggingface' | 'gguf';
  config(): JsonDocument;
  /** generation_config.json, or null when the model has none. */
  generationConfig(): JsonDocument | null;
  /** The tokenizer's documents, or null when the model has no tokenizer.json (prompts are then token ids). */
  tokenizer(): TokenizerDocuments | null;
  openCheckpoint(): Checkpoint;
  /** The names of the checkpoint's tensors as openCheckpoint names them, read without loading any; null when there are no weights (a config-only directory). */
  tensorNames(): readonly string[] | null;
}
