import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors } from '../checkpoint/safetensors-writer.ts';
import type { LoraTarget } from '../layers/parameters.ts';
import type { HostTensor } from '../tensor/host-tensor.ts';
import { bf16Tensor, randomBf16Values, seededRng } from './synthetic-batch.ts';

/**
 * Writes a PEFT LoRA adapter of `rank` with random bf16 weights on every linear layer the model
 * adapts (q/k/v/o, gate/up/down), for benchmarks: its cost, not its output, is measured. Small
 * values keep the random model's activations where they were.
 */
export function writeRandomLoraAdapter(dir: string, targets: readonly LoraTarget[], rank: number, seed: number): void {
  const rng = seededRng(seed);
  const tensors: Record<string, HostTensor> = {};
  for (const target of targets) {
    target.loraModules.forEach((module, i) => {
      const rows = target.parts[i].rows;
      tensors[`base_model.model.${module}.lora_A.weight`] = bf16Tensor([rank, target.inFeatures], randomBf16Values(rng, rank * target.inFeatures, 0.01));
      tensors[`base_model.model.${module}.lora_B.weight`] = bf16Tensor([rows, rank], randomBf16Values(rng, rows * rank, 0.01));
    });
  }
  writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  const targetModules = [...new Set(targets.flatMap((t) => t.loraModules.map((m) => m.slice(m.lastIndexOf('.') + 1))))];
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: rank, lora_alpha: rank, target_modules: targetModules, bias: 'none' }, null, 2));
}
