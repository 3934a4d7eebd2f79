import { llmInt8FixtureSuite } from './helpers/llm-int8-fixture.ts';

// float32 on the CPU backend: one prompt at a time exactly as transformers' LLM.int8(); batched,
// within 0.15 standard deviations of its logits, a flipped near-tie allowed.
llmInt8FixtureSuite('cpu', { logitTolerance: 1e-4, greedy: 'exact' }, { logitTolerance: 0.15, greedy: 'top-candidates' });
