import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeTinyTokenizer } from '../helpers/model-tiny-tokenizer.ts';
import { spawnServe } from './keel-serve-process.ts';
import { writeDummyConfig } from './tiny-chat-model.ts';

test('a batch of many prompts prints no MaxListenersExceededWarning', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-serve-batch-'));
  writeDummyConfig(dir, { vocab_size: 288, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1 });
  writeTinyTokenizer(dir);
  const child = await spawnServe(dir, ['--load-format', 'dummy', '--num-kv-blocks', '256']);
  try {
    const response = await fetch(`${child.url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: Array.from({ length: 24 }, (_, i) => [i + 1]), max_tokens: 2 }) });
    assert.equal(response.status, 200);
    await response.text();
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.doesNotMatch(child.stderr(), /MaxListenersExceededWarning/);
  } finally {
    child.child.kill('SIGKILL');
    await child.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});
