import { invalidModel } from '../errors.ts';
import { ConfigFields, isObject } from './hf-config.ts';
import { llamaFamily, type LlamaConfig } from './llama.ts';

/** EAGLE-1/2 (one checkpoint format) or EAGLE-3. */
export type EagleVersion = 1 | 3;

/**
 * An EAGLE head's config.json in any of the formats heads are published in:
 * - the EAGLE authors' (SafeAILab/EAGLE, e.g. yuhuili/EAGLE-LLaMA3-Instruct-8B and
 *   yuhuili/EAGLE3-LLaMA3.1-Instruct-8B): a LlamaConfig of the head's one decoder layer, with
 *   EAGLE-3's `draft_vocab_size` (architectures LlamaForCausalLMEagle3);
 * - vLLM's speculators format: `speculators_model_type` ("eagle3" or "eagle"), the layer's
 *   LlamaConfig under `transformer_layer_config`, `speculators_config` naming the verifier.
 */
export interface EagleHeadConfig {
  version: EagleVersion;
  /** The decoder layer's geometry (hidden size, heads, RoPE, MLP width, norm epsilon) and the target vocabulary it was trained for. */
  layer: LlamaConfig;
  /** EAGLE-3: the size of the head's own vocabulary (its LM head's rows); the target's for EAGLE. */
  draftVocabSize: number;
  /** EAGLE-3: the target's hidden size its fc reads three of (`target_hidden_size`, default the head's). */
  targetHiddenSize: number;
  /** EAGLE-3: the target layers whose input states it reads, or null for the default (2, L / 2, L - 3 of an L-layer target). */
  auxLayers: number[] | null;
  /** EAGLE-3: the hidden norm applies before the residual branches off (`norm_before_residual`). */
  normBeforeResidual: boolean;
  /** Whether the config came in the speculators format. */
  speculators: boolean;
}

export function parseEagleConfig(json: Record<string, unknown>, source: string, version: EagleVersion): EagleHeadConfig {
  const speculatorsType = json.speculators_model_type;
  const speculators = speculatorsType !== undefined;
  const method = version === 3 ? 'eagle3' : 'eagle';
  if (speculators && speculatorsType !== method) {
    throw invalidModel(`${source} is a speculators ${JSON.stringify(speculatorsType)} head, not ${method}: ${speculatorsType === 'eagle3' || speculatorsType === 'eagle' ? `use --speculative-method ${String(speculatorsType)}` : 'Keel reads eagle and eagle3 speculators'}`);
  }
  const layerJson = speculators ? json.transformer_layer_config : json;
  if (!isObject(layerJson)) throw invalidModel(`${source}: a speculators config needs transformer_layer_config (the head's decoder layer config)`);
  const layerSource = speculators ? `${source} transformer_layer_config` : source;
  if (layerJson.model_type !== 'llama') throw invalidModel(`${layerSource}: model_type ${JSON.stringify(layerJson.model_type)}; Keel reads EAGLE heads with a Llama decoder layer`);
  const layer = llamaFamily.parseConfig(layerJson, layerSource);
  const fields = new ConfigFields(json, source);
  const eagle3 = version === 3;
  const isEagle3Config = json.draft_vocab_size !== undefined || (Array.isArray(json.architectures) && json.architectures.some((a) => typeof a === 'string' && a.includes('Eagle3')));
  if (!eagle3 && !speculators && isEagle3Config) throw invalidModel(`${source} is an EAGLE-3 head (draft_vocab_size, LlamaForCausalLMEagle3): use --speculative-method eagle3`);
  if (eagle3 && !speculators && !isEagle3Config) throw invalidModel(`${source} has no draft_vocab_size: it is not an EAGLE-3 head (an EAGLE-1/2 head runs with --speculative-method eagle)`);
  if (!eagle3 && layer.numLayers !== 1) throw invalidModel(`${source}: an EAGLE head with ${layer.numLayers} decoder layers; Keel runs heads of one layer`);
  if (speculators && json.layernorms === true) throw invalidModel(`${source}: speculators eagle heads with layernorms (HASS) are not supported`);
  if (fields.boolean('norm_before_fc', false)) throw invalidModel(`${source}: norm_before_fc heads are not supported`);
  const eagleConfig = json.eagle_config;
  const auxIds = (isObject(eagleConfig) ? eagleConfig.eagle_aux_hidden_state_layer_ids : undefined) ?? json.eagle_aux_hidden_state_layer_ids;
  if (auxIds !== undefined && !(Array.isArray(auxIds) && auxIds.length === 3 && auxIds.every((i) => Number.isInteger(i) && (i as number) >= 0))) {
    throw invalidModel(`${source}: eagle_aux_hidden_state_layer_ids must list three target layer indices (got ${JSON.stringify(auxIds)})`);
  }
  return {
    version,
    layer,
    draftVocabSize: eagle3 ? fields.positiveInt('draft_vocab_size', layer.vocabSize) : layer.vocabSize,
    targetHiddenSize: fields.optionalPositiveInt('target_hidden_size', null) ?? layer.hiddenSize,
    auxLayers: eagle3 && auxIds !== undefined ? (auxIds as number[]) : null,
    // vLLM reads speculators heads with the hidden norm first unless told otherwise, the authors' after.
    normBeforeResidual: eagle3 && fields.boolean('norm_before_residual', speculators),
    speculators,
  };
}

/** EAGLE-3's default target layers: low, middle and high (2, L / 2, L - 3), as the authors train them. */
export function defaultAuxLayers(numTargetLayers: number): number[] {
  return [2, Math.floor(numTargetLayers / 2), numTargetLayers - 3];
}
