import type { CausalLM } from '../../src/models/causal-lm.ts';
import { describeBatch, type BatchDescription, type SequenceChunk } from '../../src/step/batch.ts';
import { keepsSequenceState } from '../../src/step/kv-cache-layout.ts';

/** One step prefilling every prompt, and the KV pool it needs. */
export interface PromptsPrefill {
  batch: BatchDescription;
  numBlocks: number;
  /** State slots the cache needs: one per prompt for a model with state layers (Gated DeltaNet), else 0. */
  stateSlots: number;
}

/**
 * Every prompt prefilled in one step, as the parity suite's logits test and scripts/compare-backends.ts
 * run them: each in its own consecutive run of blocks (and, for a model with state layers, state slot
 * i for prompt i), rotated as the model runner would.
 */
export function promptsPrefill(prompts: readonly number[][], blockSize: number, model: CausalLM): PromptsPrefill {
  const stateSlots = keepsSequenceState(model.kvLayers) ? prompts.length : 0;
  const rotaryRow = model.rotaryRow?.bind(model);
  let numBlocks = 0;
  const chunks = prompts.map((tokens, i): SequenceChunk => {
    const blocks = Math.ceil(tokens.length / blockSize);
    const blockTable = Array.from({ length: blocks }, (_, b) => numBlocks + b);
    numBlocks += blocks;
    return {
      tokens,
      startPos: 0,
      blockTables: [blockTable],
      ...(rotaryRow && { rotaryRow: (position: number) => rotaryRow(position, tokens.length) }),
      ...(stateSlots > 0 && { stateSlot: i }),
    };
  });
  return { batch: describeBatch(chunks, blockSize), numBlocks, stateSlots };
}
