import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_MODEL_DIR } from '../engine/load-engine.ts';
import { Tokenizer } from '../tokenizer/tokenizer.ts';
import { GrammarCompiler } from './grammar-compiler.ts';

test('a string with a length bound takes no raw control character (JSON forbids them), inside a structural tag too', async () => {
  const tokenizer = Tokenizer.load(DEFAULT_MODEL_DIR);
  const compiler = await GrammarCompiler.create({ vocabulary: tokenizer.grammarVocabulary(), vocabSize: tokenizer.vocabSize, stopTokenIds: [0], cacheSize: 4 });
  const only = (text: string) => {
    const ids = tokenizer.encode(text, { addSpecialTokens: false });
    assert.equal(ids.length, 1, `${JSON.stringify(text)} is one token`);
    return ids[0];
  };
  const bounded = { type: 'string', maxLength: 8 };
  const specs = [
    { type: 'json_schema' as const, schema: bounded },
    { type: 'structural_tag' as const, format: { type: 'tag' as const, begin: 'x=', content: { type: 'json_schema' as const, json_schema: bounded }, end: ';' } },
  ];
  for (const spec of specs) {
    const constraint = (await compiler.compile(spec)).newConstraint();
    for (const text of spec.type === 'json_schema' ? ['"'] : ['x', '=', '"']) constraint.accept(only(text));
    assert.equal(constraint.tryAccept(only('\t')), false, `${spec.type}: a tab`);
    assert.equal(constraint.tryAccept(only('a')), true, `${spec.type}: a letter`);
    constraint.dispose();
  }
});
