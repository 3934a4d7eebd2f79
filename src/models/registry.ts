import { invalidModel } from '../errors.ts';
import type { CausalLM, ModelFamily } from './causal-lm.ts';
import type { Checkpoint } from '../checkpoint/checkpoint.ts';
import { languageModelTensorName, languageModelTensors } from '../checkpoint/language-model-tensors.ts';
import type { ModelFiles } from '../checkpoint/model-documents.ts';
import { openModelFiles } from '../checkpoint/model-files.ts';
import { parseQuantizationConfig, type CheckpointQuantization } from '../checkpoint/quantization/quantization-config.ts';
import { parseSparsityConfig, type CheckpointSparsity } from '../checkpoint/sparsity-config.ts';
import { afmoeFamily } from './afmoe.ts';
import { cohereFamily } from './cohere.ts';
import { deepseekFamily } from './deepseek.ts';
import { dots1Family } from './dots1.ts';
import { ernieMoeFamily } from './ernie-moe.ts';
import { exaoneMoeFamily } from './exaone-moe.ts';
import { isObject } from './hf-config.ts';
import { gemmaFamily } from './gemma.ts';
import { gemma4Family } from './gemma4.ts';
import { glm4MoeFamily } from './glm4-moe.ts';
import { gptOssFamily } from './gpt-oss.ts';
import { graniteHybridFamily } from './granite-hybrid.ts';
import { graniteMoeFamily } from './granite-moe.ts';
import { hunyuanMoeFamily } from './hunyuan-moe.ts';
import { hyV3Family } from './hy-v3.ts';
import { kimiLinearFamily } from './kimi-linear.ts';
import { llamaFamily } from './llama.ts';
import { llama4Family } from './llama4.ts';
import { lagunaFamily } from './laguna.ts';
import { mimoV2FlashFamily } from './mimo-v2-flash.ts';
import { minimaxM2Family } from './minimax-m2.ts';
import { mixtralFamily } from './mixtral.ts';
import { nanochatFamily } from './nanochat.ts';
import { olmoFamily } from './olmo.ts';
import { olmoeFamily } from './olmoe.ts';
import type { ModelConfig } from './model-config.ts';
import type { MtpLayers } from './mtp-head.ts';
import { phi3Family } from './phi3.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import { wholeModel, type PipelineStage } from './pipeline-stage.ts';
import { qwenMoeFamily } from './qwen-moe.ts';
import { languageModelConfig, VISION_LANGUAGE_MODEL_TYPES } from './vision-language.ts';
import { qwenHybridFamily } from './qwen3-next.ts';

/** Every family Keel runs. Adding one: its file under models/, a line here, its oracle fixtures. */
const FAMILIES: readonly ModelFamily[] = [
  family(llamaFamily),
  family(mixtralFamily),
  family(qwenMoeFamily),
  family(gemmaFamily),
  family(gemma4Family),
  family(phi3Family),
  family(gptOssFamily),
  family(deepseekFamily),
  family(llama4Family),
  family(olmoFamily),
  family(glm4MoeFamily),
  family(qwenHybridFamily),
  family(minimaxM2Family),
  family(ernieMoeFamily),
  family(hunyuanMoeFamily),
  family(olmoeFamily),
  family(graniteMoeFamily),
  family(graniteHybridFamily),
  family(dots1Family),
  family(cohereFamily),
  family(mimoV2FlashFamily),
  family(lagunaFamily),
  family(exaoneMoeFamily),
  family(nanochatFamily),
  family(hyV3Family),
  family(afmoeFamily),
  family(kimiLinearFamily),
];

/**
 * A family as the registry holds it: its parser makes the config its `create` takes, which the
 * registry only ever passes back unchanged, so the config type can be forgotten here.
 */
function family<C extends ModelConfig>(f: ModelFamily<C>): ModelFamily {
  return f as unknown as ModelFamily;
}

/** A parsed config.json and the family that reads it. */
export interface ModelArchitecture {
  family: ModelFamily;
  config: ModelConfig;
  /** How the checkpoint's weights are quantized (`quantization_config`); null for 16-bit ones. */
  quantization: CheckpointQuantization | null;
  /** Which linear layers the checkpoint declares 2:4 sparse (`quantization_config.sparsity_config`); null for none. */
  sparsity: CheckpointSparsity | null;
  /** A vision-language checkpoint served as its language model (models/vision-language.ts): its tensors are read under their nested names. */
  languageModelOnly: boolean;
}

/** The config.json of a model's files (a directory's, or the one a GGUF file's metadata gives), read by its model_type's family, with its tensors' names. */
export function modelArchitectureOf(files: ModelFiles): ModelArchitecture {
  const doc = files.config();
  return parseModelArchitecture(doc.json, doc.source, files.tensorNames());
}

/** The architecture of the model at `path`: a model directory or a GGUF file. */
export function readModelArchitecture(path: string): ModelArchitecture {
  return modelArchitectureOf(openModelFiles(path));
}

/**
 * `json` read by its model_type's family. `tensorNames` (the checkpoint's stored names; null: no
 * weights, as for --load-format dummy) decide whether a tied config reads an LM head of its own,
 * and the family may read the layout of its tensors from them (ModelFamily.parseConfig).
 */
export function parseModelArchitecture(json: unknown, source: string, tensorNames: readonly string[] | null = null): ModelArchitecture {
  if (!isObject(json)) throw invalidModel(`${source} must hold a JSON object`);
  // A tied config (tie_word_embeddings, or the family's default) still reads the lm_head.weight a
  // checkpoint holds, as transformers 5.17 does: from_pretrained ties the head to the embedding only
  // where the checkpoint leaves it out (or holds it equal to the embedding, which reads the same)
  // and keeps one that differs, as a checkpoint re-saved with tie_word_embeddings turned on can
  // hold (modeling_utils.py, tie_weights).
  const languageModelOnly = VISION_LANGUAGE_MODEL_TYPES.includes(json.model_type as string);
  const text = languageModelOnly ? languageModelConfig(json, source) : { json, source };
  const modelType = text.json.model_type;
  const family = FAMILIES.find((f) => f.modelTypes.includes(modelType as string));
  if (family === undefined) {
    const got = modelType === undefined ? 'no model_type' : `model_type ${JSON.stringify(modelType)}`;
    const supported = FAMILIES.map((f) => `${f.name} (${f.modelTypes.join(', ')})`).join(', ');
    const wrappers = VISION_LANGUAGE_MODEL_TYPES.join(', ');
    throw invalidModel(`${text.source}: ${got} is not supported; Keel supports the families (model_type): ${supported}; and serves the language model of the vision-language model_types ${wrappers} (text prompts only)`);
  }
  // The names the model reads them by: a wrapper's language model's, without its vision tower's.
  const names = languageModelOnly ? tensorNames?.flatMap((name) => languageModelTensorName(name) ?? []) ?? null : tensorNames;
  const config = family.parseConfig(text.json, text.source, names);
  return {
    family,
    config: config.tieWordEmbeddings && names?.includes('lm_head.weight') ? { ...config, tieWordEmbeddings: false } : config,
    quantization: parseQuantizationConfig(json, source),
    sparsity: parseSparsityConfig(json, source),
    languageModelOnly,
  };
}

/**
 * The multi-token prediction layers a model's config declares (--speculative-method mtp), as its
 * family builds them; refused, naming the model types Keel reads them for, for any other model_type.
 */
export function mtpLayersOf(config: ModelConfig): MtpLayers {
  const mtp = familyMtp(config);
  if (mtp === null) {
    const supported = FAMILIES.flatMap((f) => f.mtp?.modelTypes ?? []);
    throw invalidModel(`--speculative-method mtp reads the multi-token prediction layers of model_type ${supported.join(', ')}; the target is model_type ${config.modelType}`);
  }
  return mtp.layers(config);
}

/** The MTP layers of a model_type Keel reads them for (whatever count its config declares), or null for another. */
export function mtpLayersIfRead(config: ModelConfig): MtpLayers | null {
  return familyMtp(config)?.layers(config) ?? null;
}

function familyMtp(config: ModelConfig): NonNullable<ModelFamily['mtp']> | null {
  const mtp = FAMILIES.find((f) => f.modelTypes.includes(config.modelType))?.mtp;
  return mtp !== undefined && mtp.modelTypes.includes(config.modelType) ? mtp : null;
}

/** The checkpoint of `files` with its tensors named as `architecture`'s model names them. */
export function openModelCheckpoint(files: ModelFiles, architecture: ModelArchitecture): Checkpoint {
  const ckpt = files.openCheckpoint();
  return architecture.languageModelOnly ? languageModelTensors(ckpt) : ckpt;
}

/**
 * The model of an architecture, its layers built but not loaded; `streaming` turns StreamingLLM
 * on; `stage` (pipelineStage) makes it one pipeline stage's part of the model.
 */
export function createModel(
  architecture: ModelArchitecture,
  maxPositions: number,
  streaming: StreamingWindow | null = null,
  stage: PipelineStage = wholeModel(architecture.config.numLayers),
): CausalLM {
  return architecture.family.create(architecture.config, maxPositions, streaming, stage);
}
