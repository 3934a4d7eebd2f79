import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HostTensor } from '../../src/tensor/host-tensor.ts';
import { createModel, parseModelArchitecture } from '../../src/models/registry.ts';
import { float32ToHostTensor } from '../../src/tensor/host-dtype.ts';
import type { WeightDType } from '../../src/tensor/host-tensor.ts';
import { forkStream } from '../../src/sampling/rng.ts';
import { writeSafetensors } from './model-safetensors-writer.ts';

/** A two-layer llama small enough to write in a few milliseconds; spread it and override keys for other variants. */
export const TINY_LLAMA_CONFIG = {
  model_type: 'llama',
  vocab_size: 32,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  rms_norm_eps: 1e-5,
  torch_dtype: 'float32',
  eos_token_id: 2,
  bos_token_id: 1,
};

export interface TinyCheckpointOptions {
  dtype?: WeightDType;
  /** Split the tensors over this many shards with a model.safetensors.index.json. */
  shards?: number;
  /** Tensors to leave out, or to replace. */
  omit?: string[];
  replace?: Record<string, HostTensor>;
  seed?: number;
  /** Values are uniform in (-scale, scale); default 1. */
  scale?: number;
}

/**
 * Writes config.json and safetensors for `hfConfig` (any supported family) with random values of
 * the shapes its layers read; returns the tensors written, by Hugging Face name, for comparing
 * against what the loader produces.
 */
export function writeTinyCheckpoint(dir: string, hfConfig: Record<string, unknown>, options: TinyCheckpointOptions = {}): Map<string, HostTensor> {
  writeFileSync(join(dir, 'config.json'), JSON.stringify(hfConfig));
  const architecture = parseModelArchitecture(hfConfig, join(dir, 'config.json'));
  const config = architecture.config;
  const tensors = new Map<string, HostTensor>();
  let stream = 0;
  for (const { name, shape } of createModel(architecture, config.contextLength).parameters()) {
    if (options.omit?.includes(name)) continue;
    const rng = forkStream(options.seed ?? 1, stream++);
    const values = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (options.scale ?? 1) * (rng.nextFloat() * 2 - 1));
    tensors.set(name, float32ToHostTensor(values, options.dtype ?? config.dtype, shape));
  }
  for (const [name, t] of Object.entries(options.replace ?? {})) tensors.set(name, t);

  const shards = options.shards ?? 1;
  if (shards === 1) {
    writeSafetensors(join(dir, 'model.safetensors'), Object.fromEntries(tensors));
    return tensors;
  }
  const names = [...tensors.keys()];
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const mine = names.filter((_, i) => i % shards === s);
    for (const name of mine) weightMap[name] = file;
    writeSafetensors(join(dir, file), Object.fromEntries(mine.map((name) => [name, tensors.get(name) as HostTensor])));
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return tensors;
}
