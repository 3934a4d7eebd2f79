import { loraParitySuite } from './helpers/lora-parity.ts';

// bf16 weights, adapters and activations on the CUDA backend against transformers' float32 merged
// model: greedy paths may part where transformers itself was nearly tied (as transformers-parity.gpu).
loraParitySuite({ backend: 'cuda', logitTolerance: 0.125, greedy: 'top-candidates', logprobTolerance: 0.3 });
