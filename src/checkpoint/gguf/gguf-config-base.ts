import { invalidModel } from '../../errors.ts';
import type { GgufArchitecture, TensorSource } from './gguf-architectures.ts';
import type { GgufMetadata } from './metadata.ts';

/** A GGUF file read for its config.json: metadata, mapped tensors and the keys every architecture shares (`common`). */
export interface ConfigBase {
  m: GgufMetadata;
  arch: GgufArchitecture;
  tensors: ReadonlyMap<string, TensorSource>;
  /** `ARCH.k`. */
  key: (k: string) => string;
  common: Record<string, unknown>;
}

/** `attention.key_length` (default hidden / heads), checked to be the value size and RoPE's width too. */
export function uniformHeadDim({ m, arch, key }: ConfigBase, fallback: number): number {
  const headDim = m.uint(key('attention.key_length'), fallback);
  const valueDim = m.uint(key('attention.value_length'), headDim);
  if (valueDim !== headDim) throw invalidModel(`${m.source}: ${key('attention.value_length')} ${valueDim} differs from the key length ${headDim}, which ${arch.name} models do not do`);
  const ropeDim = m.uint(key('rope.dimension_count'), headDim);
  if (ropeDim !== headDim) throw invalidModel(`${m.source}: ${key('rope.dimension_count')} ${ropeDim} rotates part of a ${headDim}-wide head, which Keel does not do for ${arch.name}`);
  return headDim;
}
