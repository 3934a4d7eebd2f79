import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ropeContextLength, type RopeScaling } from './rotary.ts';

const withRope = (scaling: RopeScaling, maxPositionEmbeddings = 4096) => ({ maxPositionEmbeddings, scaling });

test('context length follows the RoPE scaling factor', () => {
  assert.equal(ropeContextLength(withRope({ type: 'default' })), 4096);
  assert.equal(ropeContextLength(withRope({ type: 'linear', factor: 2 })), 8192);
  assert.equal(ropeContextLength(withRope({ type: 'dynamic', factor: 2 }, 48)), 96);
  const yarn = { type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 32768, betaFast: 32, betaSlow: 1, attentionFactor: 1, truncate: true } as const;
  assert.equal(ropeContextLength(withRope(yarn, 32768)), 131072);
  const llama3 = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } as const;
  assert.equal(ropeContextLength(withRope(llama3, 131072)), 131072);
  // Phi-3's max_position_embeddings is already the extended context.
  const longrope: RopeScaling = { type: 'longrope', shortFactor: [1], longFactor: [2], originalMaxPositionEmbeddings: 4096, attentionFactor: 1.19 };
  assert.equal(ropeContextLength(withRope(longrope, 131072)), 131072);
});
