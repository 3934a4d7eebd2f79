import { invalidModel } from '../errors.ts';
import type { SamplingParams } from '../sampling/sampling-params.ts';
import type { ModelFiles } from '../checkpoint/model-documents.ts';
import { ConfigFields } from './hf-config.ts';
import type { ModelConfig } from './model-config.ts';

export interface GenerationConfig {
  /** Union of config.json's and generation_config.json's eos_token_id. */
  eosTokenIds: number[];
  bosTokenId: number | null;
  /** The model's recommended sampling settings; requests override them (as vLLM's generation_config defaults). */
  defaults: Partial<SamplingParams>;
}

/** Reads the optional `generation_config.json`; `max_new_tokens` and other keys are ignored. */
export function readGenerationConfig(files: ModelFiles, config: ModelConfig): GenerationConfig {
  const doc = files.generationConfig();
  if (doc === null) return { eosTokenIds: config.eosTokenIds.slice(), bosTokenId: config.bosTokenId, defaults: {} };
  return parseGenerationConfig(doc.json, doc.source, config);
}

export function parseGenerationConfig(json: unknown, source: string, config: ModelConfig): GenerationConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw invalidModel(`${source} must hold a JSON object`);
  const fields = new ConfigFields(json as Record<string, unknown>, source);
  const defaults: Partial<SamplingParams> = {};
  const present = (key: string) => fields.raw(key) != null;
  if (present('temperature')) defaults.temperature = inRange(fields, 'temperature', (v) => v >= 0, '>= 0');
  if (present('top_p')) defaults.topP = inRange(fields, 'top_p', (v) => v > 0 && v <= 1, 'in (0, 1]');
  if (present('top_k')) defaults.topK = inRange(fields, 'top_k', (v) => Number.isInteger(v) && v >= -1, 'an integer >= -1');
  if (present('repetition_penalty')) defaults.repetitionPenalty = inRange(fields, 'repetition_penalty', (v) => v > 0, '> 0');
  return {
    eosTokenIds: [...new Set([...config.eosTokenIds, ...fields.tokenIds('eos_token_id')])],
    bosTokenId: fields.tokenIds('bos_token_id')[0] ?? config.bosTokenId,
    defaults,
  };
}

function inRange(fields: ConfigFields, key: string, ok: (v: number) => boolean, expected: string): number {
  const v = fields.finiteNumber(key, 0);
  if (!ok(v)) throw invalidModel(`${fields.source}: "${key}" must be ${expected} (got ${v})`);
  return v;
}
