import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { KeelError } from '../errors.ts';
import { tempDir } from '../../test/helpers/model-temp-dir.ts';
import { openModelFiles } from '../checkpoint/model-files.ts';
import { readGenerationConfig } from './generation-config.ts';
import { parseModelArchitecture } from './registry.ts';

const modelConfig = parseModelArchitecture(
  {
    model_type: 'llama',
    vocab_size: 10,
    hidden_size: 8,
    intermediate_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    bos_token_id: 1,
    eos_token_id: 2,
  },
  'config.json',
).config;

test('without generation_config.json the ids come from config.json and there are no defaults', (t) => {
  assert.deepEqual(readGenerationConfig(openModelFiles(tempDir(t)), modelConfig), { eosTokenIds: [2], bosTokenId: 1, defaults: {} });
});

test('eos ids are the union of both files and sampling defaults are read when present', (t) => {
  const dir = tempDir(t);
  writeFileSync(
    join(dir, 'generation_config.json'),
    JSON.stringify({ bos_token_id: 5, eos_token_id: [2, 7, 9], do_sample: true, temperature: 0.6, top_p: 0.9, top_k: 20, repetition_penalty: 1.05, max_new_tokens: 2048 }),
  );
  assert.deepEqual(readGenerationConfig(openModelFiles(dir), modelConfig), {
    eosTokenIds: [2, 7, 9],
    bosTokenId: 5,
    defaults: { temperature: 0.6, topP: 0.9, topK: 20, repetitionPenalty: 1.05 },
  });
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: 11, temperature: null }));
  assert.deepEqual(readGenerationConfig(openModelFiles(dir), modelConfig), { eosTokenIds: [2, 11], bosTokenId: 1, defaults: {} });
});

test('invalid values name the file and key', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'generation_config.json');
  for (const [json, key] of [
    [{ top_p: 1.5 }, 'top_p'],
    [{ temperature: -1 }, 'temperature'],
    [{ top_k: 2.5 }, 'top_k'],
    [{ repetition_penalty: 'high' }, 'repetition_penalty'],
    [{ eos_token_id: [2, 'x'] }, 'eos_token_id'],
  ] as const) {
    writeFileSync(path, JSON.stringify(json));
    assert.throws(
      () => readGenerationConfig(openModelFiles(dir), modelConfig),
      (e: unknown) => e instanceof KeelError && e.kind === 'invalid_model' && e.message.includes(path) && e.message.includes(`"${key}"`),
    );
  }
  writeFileSync(path, '{');
  assert.throws(() => readGenerationConfig(openModelFiles(dir), modelConfig), (e: unknown) => e instanceof KeelError && e.message.includes(path));
});
