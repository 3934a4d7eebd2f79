import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/keel', import.meta.url));
const PACKAGE = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

test('keel --version prints the package version', () => {
  for (const flag of ['--version', '-v']) {
    const result = spawnSync(BIN, [flag], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, `${PACKAGE.version}\n`);
  }
});

test('keel generate into a pipe that closes early ends quietly', async () => {
  // As `keel generate | head -c 10`: the reader leaves after its first bytes while Keel still writes.
  const child = spawn(BIN, ['generate', '--backend', 'cpu', '--no-progress', '--prompt', 'def f(x):', '--max-tokens', '1500', '--ignore-eos'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  child.stdout.once('data', () => child.stdout.destroy());
  const status = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  assert.equal(stderr, '', 'nothing on stderr');
  assert.equal(status, 0);
});

/** Every key of a JSON value, at any depth, but those of top_logprobs (token texts). */
function keysOf(value: unknown): string[] {
  if (Array.isArray(value)) return value.flatMap(keysOf);
  if (typeof value !== 'object' || value === null) return [];
  return Object.entries(value).flatMap(([key, v]) => [key, ...(key === 'top_logprobs' ? [] : keysOf(v))]);
}

test('--json output keys are snake_case, logprobs shaped as the HTTP API completions', () => {
  const generate = spawnSync(BIN, ['generate', '--backend', 'cpu', '--no-progress', '--prompt', 'x', '--max-tokens', '3', '--logprobs', '2', '--n', '2', '--json'], {
    encoding: 'utf8',
  });
  assert.equal(generate.status, 0, generate.stderr);
  const line = JSON.parse(generate.stdout);
  assert.deepEqual(Object.keys(line.logprobs), ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset']);
  assert.equal(line.logprobs.tokens.length, 3);
  assert.equal(line.outputs.length, 2);
  const doctor = spawnSync(BIN, ['doctor', '--json'], { encoding: 'utf8' });
  assert.equal(doctor.status, 0, doctor.stderr);
  for (const key of [...keysOf(line), ...keysOf(JSON.parse(doctor.stdout))]) assert.match(key, /^[a-z0-9_]+$/);
});

test('--logit-bias, --bad-words and --allowed-token-ids reach the engine: a forced token, unless a bad word, and only allowed ones', () => {
  const generate = (flags: string[]) => {
    const result = spawnSync(BIN, ['generate', '--backend', 'cpu', '--no-progress', '--prompt', 'x', '--max-tokens', '4', '--ignore-eos', '--json', ...flags], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    return (JSON.parse(result.stdout) as { token_ids: number[] }).token_ids;
  };
  assert.deepEqual(generate(['--logit-bias', '{"300": 100}']), [300, 300, 300, 300], 'token 300 is " s"');
  assert.ok(!generate(['--logit-bias', '{"300": 100}', '--bad-words', 'never', '--bad-words', 's']).includes(300), 'the bad word " s" wins over the bias');
  assert.deepEqual(generate(['--allowed-token-ids', '301', '--temperature', '1']), [301, 301, 301, 301]);
});
