import assert from 'node:assert/strict';
import { test } from 'node:test';
import { modelContextLength } from './context-length.ts';
import type { ModelConfig, RopeScaling } from './model-config.ts';

const withRope = (ropeScaling: RopeScaling, maxPositionEmbeddings = 4096) => ({ maxPositionEmbeddings, ropeScaling }) as ModelConfig;

test('context length follows the RoPE scaling factor', () => {
  assert.equal(modelContextLength(withRope({ type: 'default' })), 4096);
  assert.equal(modelContextLength(withRope({ type: 'linear', factor: 2 })), 8192);
  assert.equal(modelContextLength(withRope({ type: 'dynamic', factor: 2 }, 48)), 96);
  const yarn = { type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 32768, betaFast: 32, betaSlow: 1, attentionFactor: 1, truncate: true } as const;
  assert.equal(modelContextLength(withRope(yarn, 32768)), 131072);
  const llama3 = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } as const;
  assert.equal(modelContextLength(withRope(llama3, 131072)), 131072);
});
