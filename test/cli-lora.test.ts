import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { listLoraFixtures } from './helpers/lora-parity.ts';

const BIN = fileURLToPath(new URL('../bin/keel', import.meta.url));
const [first, second] = listLoraFixtures();

test('keel generate --lora-modules NAME=DIR NAME=DIR --lora NAME runs the prompts with that adapter', () => {
  const oracle = second.merged.oracle;
  const result = spawnSync(
    BIN,
    ['generate', '--backend', 'cpu', '--no-progress', '--model', first.base.dir, '--lora-modules', `${first.name}=${first.dir}`, `${second.name}=${second.dir}`, '--max-lora-rank', '8',
      '--lora', second.name, '--prompt-ids', oracle.prompts[1].join(','), '--max-tokens', String(oracle.max_new_tokens), '--temperature', '0', '--ignore-eos', '--json'],
    { encoding: 'utf8' },
  );
  assert.equal(result.status, 0, result.stderr);
  assert.deepEqual(JSON.parse(result.stdout).token_ids, oracle.greedy[1]);
});

test('keel generate refuses a malformed --lora-modules and an adapter it does not serve, by name', () => {
  const run = (...flags: string[]) => spawnSync(BIN, ['generate', '--backend', 'cpu', '--no-progress', '--model', first.base.dir, '--prompt-ids', '5,6', '--max-tokens', '1', ...flags], { encoding: 'utf8' });
  const malformed = run('--lora-modules', 'nameonly');
  assert.notEqual(malformed.status, 0);
  assert.match(malformed.stderr, /--lora-modules expects NAME=DIR \(got "nameonly"\)/);
  const unknown = run('--lora-modules', `{"name": "a", "path": "${first.dir}"}`, '--max-lora-rank', '8', '--lora', 'b');
  assert.notEqual(unknown.status, 0);
  assert.match(unknown.stderr, /no LoRA adapter named b is loaded \(loaded: a\)/);
});
