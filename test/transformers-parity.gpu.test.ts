import { transformersParitySuite } from './helpers/transformers-parity.ts';

// bf16 weights and activations on the CUDA backend against transformers' float32 reference: a
// near-tie may flip under bf16 rounding, so greedy paths may part where transformers itself was unsure.
transformersParitySuite({ backend: 'cuda', logitTolerance: 0.1, greedy: 'top-candidates' });
