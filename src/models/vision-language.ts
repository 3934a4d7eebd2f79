import { invalidModel } from '../errors.ts';
import { isObject } from './hf-config.ts';

/*
 * Vision-language checkpoints Keel serves as their language model alone, for text prompts: the
 * config nests the language model's config under `text_config` (or, in the Hub's Qwen2-VL and
 * Qwen2.5-VL configs, keeps it at its top level) and the weights nest it under a prefix
 * (checkpoint/language-model-tensors.ts); the vision tower and projector are never loaded.
 * Text-only, transformers' forward of these wrappers is their language model's.
 */

interface VisionLanguageWrapper {
  /** The text_config model_types it is known to wrap. */
  textModelTypes: readonly string[];
  /** text_config keys the wrapper's forward does not read, set to what it does instead. */
  overrides?: Record<string, unknown>;
  /**
   * Whose `tie_word_embeddings` ties the LM head: `{ wrapper: d }`, the wrapper's alone, its config
   * class's default d where unset, text_config's ignored (the wrapper owns the lm_head: Gemma 3,
   * Mistral 3, Qwen3.5, Qwen3-VL); `either`, true where the wrapper or text_config sets it (Qwen2-VL's
   * and GLM-4.1V's / GLM-4.5V's config classes forward a true text_config's to the wrapper, whose
   * default is false);
   * `text_config`, text_config's alone (Llama 4's lm_head is its Llama4ForCausalLM's, which reads
   * its own config).
   */
  tiedBy: { wrapper: boolean } | 'either' | 'text_config';
  /**
   * The text_config model_type of a config without text_config, which then holds its language
   * model's keys at its top level (the Hub's Qwen2-VL and Qwen2.5-VL configs, written before
   * transformers nested them; transformers builds text_config from those keys).
   */
  flatTextModelType?: string;
}

/** The wrapper model_types Keel serves. */
const WRAPPERS: Readonly<Record<string, VisionLanguageWrapper>> = {
  // Gemma3ForConditionalGeneration never soft-caps its logits, whatever text_config's
  // final_logit_softcapping says (Gemma3ForCausalLM does).
  gemma3: { textModelTypes: ['gemma3_text'], overrides: { final_logit_softcapping: null }, tiedBy: { wrapper: true } },
  mistral3: { textModelTypes: ['mistral', 'ministral3', 'mistral4'], tiedBy: { wrapper: true } },
  llama4: { textModelTypes: ['llama4_text'], tiedBy: 'text_config' },
  qwen3_5: { textModelTypes: ['qwen3_5_text'], tiedBy: { wrapper: false } },
  qwen3_5_moe: { textModelTypes: ['qwen3_5_moe_text'], tiedBy: { wrapper: false } },
  qwen2_vl: { textModelTypes: ['qwen2_vl_text'], tiedBy: 'either', flatTextModelType: 'qwen2_vl_text' },
  qwen2_5_vl: { textModelTypes: ['qwen2_5_vl_text'], tiedBy: 'either', flatTextModelType: 'qwen2_5_vl_text' },
  qwen3_vl: { textModelTypes: ['qwen3_vl_text'], tiedBy: { wrapper: false } },
  qwen3_vl_moe: { textModelTypes: ['qwen3_vl_moe_text'], tiedBy: { wrapper: false } },
  glm4v: { textModelTypes: ['glm4v_text'], tiedBy: 'either' },
  glm4v_moe: { textModelTypes: ['glm4v_moe_text'], tiedBy: 'either' },
  gemma4: { textModelTypes: ['gemma4_text'], tiedBy: { wrapper: true } },
};

export const VISION_LANGUAGE_MODEL_TYPES: readonly string[] = Object.keys(WRAPPERS);

/**
 * Keys of the wrapper's top level its language model reads when text_config leaves them out: the
 * Hub's configs give the dtype and the special tokens there only.
 */
const INHERITED_KEYS = ['dtype', 'torch_dtype', 'bos_token_id', 'eos_token_id', 'pad_token_id'];

/** A language model's config.json, as the family of its model_type reads it. */
export interface LanguageModelConfig {
  json: Record<string, unknown>;
  source: string;
}

/**
 * The language model's config of a vision-language config.json (`json`, whose model_type is one of
 * VISION_LANGUAGE_MODEL_TYPES): its text_config (or, for a wrapper with `flatTextModelType` and no
 * text_config, its top level), with the keys it leaves out taken from the top level and the
 * wrapper's overrides. `tie_word_embeddings` follows the wrapper's `tiedBy`, as transformers 5 ties
 * the wrapper's lm_head by the wrapper's config (the Hub's Mistral Small configs set none, so tie by
 * the class default, and ship an lm_head, which a tied config reads: registry.ts).
 */
export function languageModelConfig(json: Record<string, unknown>, source: string): LanguageModelConfig {
  const modelType = json.model_type as string;
  const wrapper = WRAPPERS[modelType];
  if (json.text_config == null && wrapper.flatTextModelType !== undefined) {
    const { vision_config: _vision, ...top } = json;
    return { json: { ...top, model_type: wrapper.flatTextModelType, tie_word_embeddings: tiedBy(wrapper, json, top) }, source };
  }
  const text = json.text_config;
  if (!isObject(text)) throw invalidModel(`${source}: model_type "${modelType}" nests its language model's config under "text_config", which is missing or not an object`);
  const textSource = `${source} text_config`;
  if (!wrapper.textModelTypes.includes(text.model_type as string)) {
    const got = text.model_type === undefined ? 'no model_type' : `model_type ${JSON.stringify(text.model_type)}`;
    throw invalidModel(`${textSource}: ${got} is not supported inside a "${modelType}" checkpoint (Keel serves ${wrapper.textModelTypes.join(', ')} there)`);
  }
  const merged: Record<string, unknown> = { ...text, ...wrapper.overrides };
  for (const key of INHERITED_KEYS) if (merged[key] == null && json[key] != null) merged[key] = json[key];
  const tied = tiedBy(wrapper, json, text);
  if (tied !== undefined) merged.tie_word_embeddings = tied;
  return { json: merged, source: textSource };
}

/** The `tie_word_embeddings` the language model reads by the wrapper's rule (`tiedBy`); undefined: text_config's own, or the family's default. */
function tiedBy(wrapper: VisionLanguageWrapper, top: Record<string, unknown>, text: Record<string, unknown>): unknown {
  if (typeof wrapper.tiedBy === 'object') return top.tie_word_embeddings ?? wrapper.tiedBy.wrapper;
  switch (wrapper.tiedBy) {
    case 'either':
      return top.tie_word_embeddings === true ? true : (text.tie_word_embeddings ?? top.tie_word_embeddings ?? undefined);
    case 'text_config':
      return undefined;
  }
}
