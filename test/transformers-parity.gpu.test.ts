import { transformersParitySuite } from './helpers/transformers-parity.ts';

// bf16 weights and activations on the CUDA backend against transformers' float32 reference: a
// near-tie may flip under bf16 rounding, so greedy paths may part where transformers itself was unsure.
// Each variant loads the model onto the GPU afresh; the CPU suite runs them all, this a cross-section.
transformersParitySuite({
  backend: 'cuda',
  logitTolerance: 0.125,
  acceptBf16ReferenceError: true,
  greedy: 'top-candidates',
  variants: [
    'all prompts in one batch',
    'eager decode steps (no CUDA graphs)',
    "each step's tokens read before the next is launched",
    'chunked prefill, 7 tokens per step',
    'forced preemption (8-block pool)',
    'speculative n-gram drafts',
    'speculative self-draft',
  ],
});
