import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openCheckpoint, type Checkpoint } from '../checkpoint/checkpoint.ts';
import { invalidModel } from '../errors.ts';
import type { CausalLM } from '../models/causal-lm.ts';
import type { DraftHead } from '../models/draft-head.ts';
import { loadDummyWeights } from '../models/dummy-weights.ts';
import { parseEagleConfig } from '../models/eagle-config.ts';
import { EagleHead } from '../models/eagle-head.ts';
import { loadWeightsWithProgress } from '../models/load-weights.ts';
import { MtpHead } from '../models/mtp-head.ts';
import { mtpLayersOf } from '../models/registry.ts';
import type { Backend } from '../backend/backend.ts';
import type { EngineConfig } from '../config.ts';
import type { ModelConfig } from '../models/model-config.ts';

/** What loading a head reads of the loaded target (load-engine.ts's LoadedModel). */
export interface HeadTarget {
  config: Pick<EngineConfig, 'loadFormat' | 'seed' | 'showProgress'>;
  modelConfig: ModelConfig;
  model: CausalLM;
  backend: Backend;
  maxModelLen: number;
}

/**
 * An EAGLE-1/2 or EAGLE-3 head from its directory, in the authors' format or the speculators
 * format (config.json says which), checked against the target before its weights are read.
 */
export function loadEagleHead(dir: string, version: 1 | 3, target: HeadTarget): EagleHead {
  const configPath = join(dir, 'config.json');
  if (!existsSync(configPath)) throw invalidModel(`${dir} has no config.json: it is not an EAGLE head's directory`);
  const config = parseEagleConfig(JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>, configPath, version);
  if (target.config.loadFormat === 'dummy') {
    const head = EagleHead.forCheckpoint(config, null, eagleTarget(target), target.maxModelLen);
    loadDummyWeights(head, target.modelConfig.dtype, target.backend, target.config.seed);
    head.readVocabularyMap(null);
    return head;
  }
  // The authors publish pytorch_model.bin; the speculators format and converted heads, model.safetensors.
  if (!existsSync(join(dir, 'model.safetensors')) && !existsSync(join(dir, 'model.safetensors.index.json')) && existsSync(join(dir, 'pytorch_model.bin'))) {
    throw invalidModel(`${dir} holds its head as pytorch_model.bin (a pickle, which Keel does not read): save the state dict as model.safetensors (safetensors.torch.save_file(torch.load(...), "model.safetensors"))`);
  }
  const ckpt = openCheckpoint(dir);
  try {
    const head = EagleHead.forCheckpoint(config, ckpt, eagleTarget(target), target.maxModelLen);
    head.readVocabularyMap(ckpt);
    // This closes the checkpoint.
    loadWeightsWithProgress(head, ckpt, target.backend, { showProgress: target.config.showProgress });
    return head;
  } finally {
    ckpt.close();
  }
}

/** The target's own multi-token prediction module (DeepSeek-V3's, GLM's, Qwen3-Next's, Qwen3.5's), read from its checkpoint. */
export function loadMtpHead(target: HeadTarget, openTargetCheckpoint: () => Checkpoint): MtpHead {
  const layers = mtpLayersOf(target.modelConfig);
  const dummy = target.config.loadFormat === 'dummy';
  const ckpt = dummy ? null : openTargetCheckpoint();
  try {
    const head = MtpHead.forTarget(target.modelConfig, layers, target.model, ckpt, target.maxModelLen);
    if (ckpt === null) loadDummyWeights(head, target.modelConfig.dtype, target.backend, target.config.seed);
    else loadWeightsWithProgress(head, ckpt, target.backend, { showProgress: target.config.showProgress });
    return head;
  } finally {
    ckpt?.close();
  }
}

function eagleTarget(target: HeadTarget) {
  const { model, modelConfig } = target;
  return { hiddenSize: modelConfig.hiddenSize, vocabSize: modelConfig.vocabSize, numLayers: modelConfig.numLayers, embedding: model.embedding, lmHead: model.lmHead };
}

/** Whether a target can feed a head: the states it reads must be ones the target's forward hands over. */
export function checkHeadTarget(head: DraftHead, model: CausalLM): void {
  if (head.targetStates.kind === 'layerInputs' && !model.tapsLayerInputs) {
    throw invalidModel(`the ${head.name} head reads the states entering some of the target's layers, which ${model.config.modelType} models do not hand over in Keel`);
  }
}
