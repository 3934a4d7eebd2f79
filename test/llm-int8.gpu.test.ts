import { llmInt8FixtureSuite } from './helpers/llm-int8-fixture.ts';

// bf16 activations on CUDA: the parity suite's bf16 tolerances, alone and batched.
const bf16 = { logitTolerance: 0.125, acceptBf16ReferenceError: true, greedy: 'top-candidates' } as const;
llmInt8FixtureSuite('cuda', bf16, bf16);
