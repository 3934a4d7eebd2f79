import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { KeelError } from '../errors.ts';
import { tempDir } from '../../test/helpers/model-temp-dir.ts';
import { readCustomPrompts } from './custom-dataset.ts';

test('a custom dataset is one {"prompt"} per JSONL line, blank lines skipped', (t) => {
  const path = join(tempDir(t), 'prompts.jsonl');
  writeFileSync(path, '{"prompt": "def f(x):\\n"}\n\n{"prompt": "import os", "other": 1}\n');
  assert.deepEqual(readCustomPrompts(path), ['def f(x):\n', 'import os']);
});

test('a bad custom dataset is an error naming the file, the line and what a line holds', (t) => {
  const dir = tempDir(t);
  const cases: [string, RegExp][] = [
    ['{"prompt": "a"}\nnot json\n', /line 2 is not JSON: each line holds one \{"prompt": "\.\.\."\}/],
    ['{"text": "a"}\n', /line 1 has no "prompt" string/],
    ['{"prompt": ""}\n', /line 1 has no "prompt" string/],
    ['\n\n', /holds no prompts/],
  ];
  cases.forEach(([content, message], i) => {
    const path = join(dir, `bad-${i}.jsonl`);
    writeFileSync(path, content);
    assert.throws(() => readCustomPrompts(path), (e: unknown) => e instanceof KeelError && message.test(e.message) && e.message.includes(path));
  });
  assert.throws(() => readCustomPrompts(join(dir, 'missing.jsonl')), /--dataset-path .*missing\.jsonl cannot be read/);
});
