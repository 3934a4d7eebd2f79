import type { Activation, Backend, Tensor } from '../backend/backend.ts';

/** Sees the input of a linear layer and its weight before the multiply. */
export type LinearObserver = (x: Tensor, weight: Tensor) => void;

/**
 * `Base` (a backend class constructed without arguments) calling an observer with the input of
 * every `linear` and `gatedLinear`: what a calibration pass records. A gatedLinear that multiplies
 * through `linear` calls it twice for one input (calibrate counts it once).
 */
export function recordingBackend<B extends Backend>(Base: new () => B): new (observe: LinearObserver) => B {
  // A class expression over a generic base: TypeScript types its overrides through Backend's.
  const Recording = class extends (Base as new () => Backend) {
    private readonly observe: LinearObserver;

    constructor(observe: LinearObserver) {
      super();
      this.observe = observe;
    }

    override linear(x: Tensor, weight: Tensor, bias: Tensor | null, options?: { float32?: boolean }): Tensor {
      this.observe(x, weight);
      return super.linear(x, weight, bias, options);
    }

    override gatedLinear(x: Tensor, gateUp: Tensor, activation: Activation): Tensor {
      this.observe(x, gateUp);
      return super.gatedLinear(x, gateUp, activation);
    }
  };
  return Recording as unknown as new (observe: LinearObserver) => B;
}
