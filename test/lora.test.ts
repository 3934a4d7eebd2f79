import { loraParitySuite } from './helpers/lora-parity.ts';

// The CPU backend computes in float32 like the oracle, which merged the adapters into the weights:
// tokens are exact, logprobs agree to rounding (x·Wᵀ + (x·Aᵀ)·Bᵀ against x·(W + B·A)ᵀ).
loraParitySuite({ backend: 'cpu', logitTolerance: 1e-4, greedy: 'exact', logprobTolerance: 1e-4 });
