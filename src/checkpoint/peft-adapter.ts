import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { invalidArgument } from '../errors.ts';
import type { LoraAdapter, LoraModuleWeights } from '../tensor/lora-adapter.ts';
import { readJsonFile } from './json-file.ts';
import { SafetensorsFile } from './safetensors.ts';

const CONFIG_FILE = 'adapter_config.json';
const WEIGHTS_FILE = 'adapter_model.safetensors';
/** PEFT saves its LoRA tensors under the wrapped model's names, behind this prefix. */
const KEY_PREFIX = 'base_model.model.';
const KEY_PATTERN = /^(.+)\.lora_([AB])\.weight$/;

/**
 * Reads a PEFT LoRA adapter. Refused with an error naming the problem: a missing file, another
 * PEFT method, a rank above `maxRank`, and what Keel does not apply (DoRA, LoRA biases, fully
 * trained modules_to_save, per-module rank/alpha patterns, Conv1D's fan_in_fan_out, embedding
 * adapters, tensors whose shapes disagree with r).
 */
export function readLoraAdapter(dir: string, maxRank: number): LoraAdapter {
  const configPath = join(dir, CONFIG_FILE);
  const weightsPath = join(dir, WEIGHTS_FILE);
  if (!existsSync(configPath)) throw invalidArgument(`${dir} is not a PEFT adapter: it has no ${CONFIG_FILE}`);
  if (!existsSync(weightsPath)) throw invalidArgument(`${dir} has no ${WEIGHTS_FILE} (Keel reads adapters saved as safetensors)`);
  const config = readJsonFile(configPath) as Record<string, unknown>;
  const { rank, scale } = checkConfig(config, configPath, maxRank);
  const file = SafetensorsFile.open(weightsPath);
  try {
    const parts = new Map<string, Partial<LoraModuleWeights>>();
    for (const key of file.tensors.keys()) {
      const match = key.startsWith(KEY_PREFIX) ? KEY_PATTERN.exec(key.slice(KEY_PREFIX.length)) : null;
      if (match === null) {
        throw invalidArgument(`${weightsPath}: tensor ${key} is not a LoRA A or B matrix (Keel applies LoRA to linear layers only, not embeddings, biases or trained modules)`);
      }
      const [, module, which] = match;
      const entry = parts.get(module) ?? {};
      entry[which === 'A' ? 'a' : 'b'] = file.read(key);
      parts.set(module, entry);
    }
    if (parts.size === 0) throw invalidArgument(`${weightsPath} holds no LoRA tensors`);
    const modules = new Map<string, LoraModuleWeights>();
    for (const [module, { a, b }] of parts) {
      if (a === undefined || b === undefined) throw invalidArgument(`${weightsPath}: ${module} has lora_${a === undefined ? 'A' : 'B'} missing`);
      if (a.shape.length !== 2 || b.shape.length !== 2 || b.shape[1] !== a.shape[0]) {
        throw invalidArgument(`${weightsPath}: ${module}'s lora_A [${a.shape.join(', ')}] and lora_B [${b.shape.join(', ')}] are not [r, in] and [out, r]`);
      }
      if (a.shape[0] !== rank) throw invalidArgument(`${weightsPath}: ${module} has rank ${a.shape[0]}, but the adapter's r is ${rank}`);
      modules.set(module, { a, b });
    }
    return { path: dir, rank, scale, modules };
  } finally {
    file.close();
  }
}

function checkConfig(config: Record<string, unknown>, path: string, maxRank: number): { rank: number; scale: number } {
  const peftType = config.peft_type;
  if (peftType !== 'LORA') throw invalidArgument(`${path}: peft_type is ${JSON.stringify(peftType)}; Keel serves LORA adapters only`);
  const rank = config.r;
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 1) throw invalidArgument(`${path}: r must be a positive integer (got ${JSON.stringify(rank)})`);
  if (rank > maxRank) throw invalidArgument(`${path}: the adapter's rank ${rank} exceeds the max LoRA rank ${maxRank} (--max-lora-rank)`);
  const alpha = config.lora_alpha ?? 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw invalidArgument(`${path}: lora_alpha must be a number (got ${JSON.stringify(alpha)})`);
  if (config.use_dora === true) throw invalidArgument(`${path}: DoRA adapters (use_dora) are not supported`);
  if (config.bias !== undefined && config.bias !== 'none') throw invalidArgument(`${path}: bias "${String(config.bias)}" trains biases, which Keel does not apply; only bias "none"`);
  if (config.fan_in_fan_out === true) throw invalidArgument(`${path}: fan_in_fan_out adapters (Conv1D layers) are not supported`);
  const saved = config.modules_to_save;
  if (Array.isArray(saved) && saved.length > 0) throw invalidArgument(`${path}: modules_to_save (${saved.join(', ')}) replaces whole modules, which Keel does not serve`);
  for (const key of ['rank_pattern', 'alpha_pattern']) {
    const pattern = config[key];
    if (pattern !== undefined && pattern !== null && Object.keys(pattern as object).length > 0) {
      throw invalidArgument(`${path}: ${key} gives some modules their own rank or alpha, which Keel does not support`);
    }
  }
  const scale = config.use_rslora === true ? alpha / Math.sqrt(rank) : alpha / rank;
  return { rank, scale };
}
