import type { Backend } from '../../src/backend/backend.ts';
import type { CausalLM } from '../../src/models/causal-lm.ts';
import { describeBatch } from '../../src/step/batch.ts';
import type { OracleFixture } from './oracle-fixtures.ts';

/** Last-token logits of a fixture's oracle prompts, prefilled together in one step. */
export function promptLogits(backend: Backend, model: CausalLM, fixture: OracleFixture): Float32Array[] {
  return lastTokenLogits(backend, model, fixture.oracle.prompts);
}

/** Last-token logits of token-id prompts, prefilled together in one step. */
export function lastTokenLogits(backend: Backend, model: CausalLM, prompts: readonly number[][]): Float32Array[] {
  const blockSize = 16;
  let next = 0;
  const chunks = prompts.map((tokens) => {
    const blocks = Math.ceil(tokens.length / blockSize);
    const blockTable = Array.from({ length: blocks }, (_, i) => next + i);
    next += blocks;
    return { tokens, startPos: 0, blockTables: [blockTable] };
  });
  const cache = backend.createKvCache({ numBlocks: next, blockSize, layers: model.kvLayers });
  const logits = backend.toHost(model.forward(backend, backend.beginStep(describeBatch(chunks, blockSize)), cache));
  const vocab = logits.length / chunks.length;
  return chunks.map((_, i) => logits.slice(i * vocab, (i + 1) * vocab));
}
