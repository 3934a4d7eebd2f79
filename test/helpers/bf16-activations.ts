import type { Backend } from '../../src/backend/backend.ts';
import type { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { CpuTensor } from '../../src/backend/cpu/cpu-tensor.ts';
import { floatToBf16Bits, roundToBf16 as roundScale } from '../../src/tensor/host-dtype.ts';

/*
 * The CPU backend with its activations rounded to bf16 as the CUDA backend stores them: each op's
 * first tensor argument and its result are rounded in place (and the embedding's scale, as CUDA
 * rounds it). Weights stay as loaded, unless
 * `weights` is set: then every weight `loadWeight` uploads without `float32` is rounded too, as
 * the CUDA backend stores it. A model whose logits this moves by much is one a GPU test cannot
 * compare with the CPU's float32 logits at tight allowances, whatever the kernels do.
 */

const bits = new Uint32Array(1);
const value = new Float32Array(bits.buffer);

function roundToBf16(t: unknown): void {
  if (!(t instanceof CpuTensor)) return;
  const data = t.data;
  for (let i = 0; i < data.length; i++) {
    bits[0] = floatToBf16Bits(data[i]) << 16;
    data[i] = value[0];
  }
}

/** Ops that set up a step or move data rather than compute activations. */
const UNROUNDED = /^(toHost|beginStep|create|load|upload|dispose)/;

export function withBf16Activations(backend: CpuBackend, options: { weights?: boolean } = {}): Backend {
  return new Proxy(backend, {
    get(target, prop, receiver) {
      const member = Reflect.get(target, prop, receiver);
      if (typeof member !== 'function') return member;
      if (prop === 'loadWeight' && options.weights) {
        return (t: unknown, load?: { float32?: boolean }) => {
          const weight = target.loadWeight(t as Parameters<CpuBackend['loadWeight']>[0], load);
          if (!load?.float32) roundToBf16(weight);
          return weight;
        };
      }
      if (typeof prop !== 'string' || UNROUNDED.test(prop)) return member.bind(target);
      // The embedding's scale is rounded to the activation dtype too (Backend.embedding).
      if (prop === 'embedding') return (...args: Parameters<CpuBackend['embedding']>) => {
        const result = target.embedding(args[0], args[1], roundScale(args[2]), args[3]);
        roundToBf16(result);
        return result;
      };
      return (...args: unknown[]) => {
        roundToBf16(args[0]);
        const result = member.apply(target, args);
        roundToBf16(result);
        return result;
      };
    },
  });
}
