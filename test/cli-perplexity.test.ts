import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { tempDir } from './helpers/model-temp-dir.ts';

const BIN = fileURLToPath(new URL('../bin/keel', import.meta.url));

function keel(args: string[]) {
  return spawnSync(BIN, ['perplexity', '--backend', 'cpu', '--no-progress', ...args], { encoding: 'utf8' });
}

test('keel perplexity --json prints one JSON line whose perplexity is the default model\'s on the file', (t) => {
  const file = join(tempDir(t), 'code.py');
  writeFileSync(file, 'import os\n\ndef main():\n    print(os.getcwd())\n\nif __name__ == "__main__":\n    main()\n');
  const result = keel(['--file', file, '--json', '--context-length', '16', '--stride', '8']);
  assert.equal(result.status, 0, result.stderr);
  const lines = result.stdout.trim().split('\n');
  const summary = JSON.parse(lines[lines.length - 1]);
  assert.ok(summary.perplexity > 1 && Number.isFinite(summary.perplexity), String(summary.perplexity));
  assert.equal(summary.context_length, 16);
  assert.equal(summary.stride, 8);
  assert.equal(summary.scored_tokens, summary.tokens - 1);
  assert.ok(Math.abs(Math.log(summary.perplexity) - summary.mean_nll) < 1e-9);
});

test('keel perplexity names what is wrong: no file, an unreadable file, a window longer than the model allows', (t) => {
  assert.match(keel([]).stderr, /give the text to score with --file/);
  assert.match(keel(['--file', join(tempDir(t), 'missing.txt')]).stderr, /cannot read --file .*missing\.txt/);
  const file = join(tempDir(t), 'x.txt');
  writeFileSync(file, 'hello world');
  const tooLong = keel(['--file', file, '--context-length', '5000']);
  assert.notEqual(tooLong.status, 0);
  assert.match(tooLong.stderr, /--context-length 5000 does not fit the max model length 2048/);
});
