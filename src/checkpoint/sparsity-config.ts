import { invalidModel } from '../errors.ts';
import type { SparsityPattern } from '../tensor/sparse24.ts';
import { targetsModule } from './quantization/compressed-tensors.ts';

/**
 * A 2:4 sparse checkpoint's declaration, as compressed-tensors (llm-compressor, `keel prune`)
 * writes it: `quantization_config.sparsity_config` with `sparsity_structure: "2:4"`, the weights
 * stored dense (`format: "dense"`, zeros and all), `targets` and `ignore` naming the modules
 * pruned and those left out (a module name, a `re:` expression, or the class name `Linear`).
 */
export interface CheckpointSparsity {
  pattern: SparsityPattern;
  targets: string[];
  ignore: string[];
}

/** The checkpoint's sparsity, or null when config.json declares none. */
export function parseSparsityConfig(json: Record<string, unknown>, source: string): CheckpointSparsity | null {
  const quantization = json.quantization_config as Record<string, unknown> | null | undefined;
  const raw = quantization?.sparsity_config;
  if (raw == null || (typeof raw === 'object' && Object.keys(raw).length === 0)) return null;
  const where = `${source} quantization_config.sparsity_config`;
  if (typeof raw !== 'object' || Array.isArray(raw)) throw invalidModel(`${where} must be an object`);
  const s = raw as Record<string, unknown>;
  if (s.sparsity_structure !== '2:4') {
    throw invalidModel(`${where}: sparsity_structure ${JSON.stringify(s.sparsity_structure)} is not supported (Keel runs 2:4 sparse checkpoints)`);
  }
  const format = s.format ?? 'dense';
  if (format !== 'dense') {
    throw invalidModel(`${where}: format ${JSON.stringify(format)} is not supported (Keel reads 2:4 checkpoints stored dense, format "dense", as keel prune writes them)`);
  }
  const strings = (key: string, fallback: string[]): string[] => {
    const v = s[key] ?? fallback;
    if (!Array.isArray(v) || !v.every((t) => typeof t === 'string')) throw invalidModel(`${where}: ${key} must be a list of strings`);
    return v as string[];
  };
  return { pattern: '2:4', targets: strings('targets', ['Linear']), ignore: strings('ignore', []) };
}

/** Whether the sparsity declared covers the module `base` (a linear weight's name without `.weight`). */
export function sparsityCovers(sparsity: CheckpointSparsity, base: string): boolean {
  return sparsity.targets.some((t) => targetsModule(t, base)) && !sparsity.ignore.some((t) => targetsModule(t, base));
}
