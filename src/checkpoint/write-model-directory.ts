import { copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { invalidArgument } from '../errors.ts';
import { readJsonFile } from './json-file.ts';
import { writeSafetensorsFile, type SafetensorsTensor } from './safetensors-writer.ts';

/**
 * Writes a model directory made from the one at `source`: `tensors` as one model.safetensors,
 * config.json with `config` merged over the source's, and the files a model loads besides its
 * weights and config (tokenizer, chat template, generation defaults) copied.
 */
export function writeModelDirectory(source: string, output: string, tensors: Map<string, SafetensorsTensor>, config: Record<string, unknown>): void {
  mkdirSync(output, { recursive: true });
  if (existsSync(join(output, 'model.safetensors.index.json'))) throw invalidArgument(`${output} already holds a sharded checkpoint`);
  writeSafetensorsFile(join(output, 'model.safetensors'), tensors, { format: 'pt' });
  for (const file of readdirSync(source)) {
    if (/^(tokenizer|special_tokens_map|generation_config|chat_template|vocab|merges|added_tokens)/.test(file)) copyFileSync(join(source, file), join(output, file));
  }
  const merged = { ...(readJsonFile(join(source, 'config.json')) as Record<string, unknown>), ...config };
  writeFileSync(join(output, 'config.json'), `${JSON.stringify(merged, null, 2)}\n`);
}
