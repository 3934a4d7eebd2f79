import type { HostTensor } from './host-tensor.ts';

/** One adapted linear module: delta W = scale · B · A. */
export interface LoraModuleWeights {
  /** [rank, in] (PEFT's lora_A). */
  a: HostTensor;
  /** [out, rank] (PEFT's lora_B). */
  b: HostTensor;
}

/**
 * A PEFT LoRA adapter read from its directory (adapter_config.json + adapter_model.safetensors):
 * each adapted module's A and B by the base model's module name (the checkpoint name of its
 * weight without `.weight`, e.g. `model.layers.0.self_attn.q_proj`), and the scale of every delta.
 */
export interface LoraAdapter {
  readonly path: string;
  /** Its rank, config `r` (every module's A has r rows). */
  readonly rank: number;
  /** lora_alpha / r, or lora_alpha / √r with use_rslora. */
  readonly scale: number;
  readonly modules: ReadonlyMap<string, LoraModuleWeights>;
}
