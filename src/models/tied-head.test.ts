import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { checkpointTensorNames } from '../checkpoint/checkpoint.ts';
import { listOracleFixtures } from '../../test/helpers/oracle-fixtures.ts';
import { parseModelArchitecture, readModelArchitecture } from './registry.ts';

// transformers 5.17's from_pretrained ties the LM head to the embedding only where the checkpoint
// leaves lm_head out (or holds it equal to the embedding), and keeps an lm_head that differs even
// when config.json says tie_word_embeddings: Keel reads the head a checkpoint holds, in every family.
// test/fixtures/mistral3-vl-own-head checks the logits against transformers'.

const GEMMA3_TEXT = { model_type: 'gemma3_text', hidden_size: 64, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, vocab_size: 256 };
const tied = (json: Record<string, unknown>, names: string[] | null) => parseModelArchitecture(json, 'test/config.json', names).config.tieWordEmbeddings;

test('a tied config reads the lm_head the checkpoint holds, under its own name or a vision-language one', () => {
  const embedding = 'model.embed_tokens.weight';
  // Gemma ties by default (tie_word_embeddings absent).
  assert.deepEqual([tied(GEMMA3_TEXT, null), tied(GEMMA3_TEXT, [embedding]), tied(GEMMA3_TEXT, [embedding, 'lm_head.weight'])], [true, true, false]);
  const llama = { ...GEMMA3_TEXT, model_type: 'llama', tie_word_embeddings: true };
  assert.deepEqual([tied(llama, [embedding]), tied(llama, [embedding, 'lm_head.weight']), tied({ ...llama, tie_word_embeddings: false }, [embedding, 'lm_head.weight'])], [true, false, false]);
  // A wrapper's head: transformers 5's name and transformers 4.52's; a vision tower's tensor is no head.
  const wrapper = { model_type: 'gemma3', tie_word_embeddings: true, text_config: GEMMA3_TEXT };
  const nested = ['language_model.model.embed_tokens.weight', 'vision_tower.vision_model.head.weight'];
  assert.deepEqual(
    [tied(wrapper, nested), tied(wrapper, [...nested, 'language_model.lm_head.weight']), tied(wrapper, ['model.language_model.embed_tokens.weight', 'lm_head.weight'])],
    [true, false, false],
  );
});

test('every fixture ties its LM head exactly when its config says so and its checkpoint holds no lm_head', () => {
  for (const fixture of listOracleFixtures()) {
    const names = checkpointTensorNames(fixture.dir) ?? [];
    const holdsHead = names.some((n) => n === 'lm_head.weight' || n === 'language_model.lm_head.weight');
    const saysTied = parseModelArchitecture(JSON.parse(readFileSync(join(fixture.dir, 'config.json'), 'utf8')), fixture.dir).config.tieWordEmbeddings;
    assert.equal(readModelArchitecture(fixture.dir).config.tieWordEmbeddings, saysTied && !holdsHead, fixture.name);
  }
});
