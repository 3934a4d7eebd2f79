import { transformersParitySuite } from './helpers/transformers-parity.ts';

// float32 on the CPU backend: within 1e-4 of transformers' float32 logits.
transformersParitySuite({ backend: 'cpu', logitTolerance: 1e-4, greedy: 'exact' });
