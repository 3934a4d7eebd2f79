import { transformersParitySuite } from './helpers/transformers-parity.ts';

// bf16 weights and activations on the CUDA backend against transformers' float32 logits.
transformersParitySuite({ backend: 'cuda', logitTolerance: 0.1 });
