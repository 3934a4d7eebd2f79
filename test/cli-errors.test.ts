import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, readFileSync, truncateSync, writeFileSync, statSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { tempDir } from './helpers/model-temp-dir.ts';
import { FIXTURES_DIR } from './helpers/oracle-fixtures.ts';

const BIN = fileURLToPath(new URL('../bin/keel', import.meta.url));

/** Runs `keel generate` and returns its exit status and stderr. */
function keel(args: string[]): { status: number | null; stderr: string } {
  const result = spawnSync(BIN, ['generate', '--backend', 'cpu', '--no-progress', ...args], { encoding: 'utf8' });
  return { status: result.status, stderr: result.stderr };
}

/** A copy of a fixture checkpoint to break. */
function fixtureCopy(t: TestContext, name = 'llama-gqa'): string {
  const dir = tempDir(t);
  cpSync(join(FIXTURES_DIR, name), dir, { recursive: true });
  return dir;
}

function assertCleanError(result: { status: number | null; stderr: string }, message: RegExp): void {
  assert.notEqual(result.status, 0, 'exits non-zero');
  assert.match(result.stderr, message);
  assert.doesNotMatch(result.stderr, /^\s+at /m, 'no stack trace');
}

const PROMPT = ['--prompt-ids', '5,6,7', '--max-tokens', '4'];

test('unsupported model_type lists the supported ones', (t) => {
  const dir = fixtureCopy(t);
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, model_type: 'gpt2' }));
  assertCleanError(keel(['--model', dir, ...PROMPT]), /gpt2.*llama.*mistral.*qwen2.*qwen3/s);
});

test('missing model_type is named', (t) => {
  const dir = fixtureCopy(t);
  const { model_type: _, ...config } = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  assertCleanError(keel(['--model', dir, ...PROMPT]), /model_type/);
});

test('a truncated safetensors file is reported with its path', (t) => {
  const dir = fixtureCopy(t);
  const file = join(dir, 'model.safetensors');
  truncateSync(file, Math.floor(statSync(file).size / 2));
  assertCleanError(keel(['--model', dir, ...PROMPT]), /model\.safetensors/);
});

test('a missing tensor is named', (t) => {
  const dir = fixtureCopy(t, 'llama-sharded');
  const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
  delete index.weight_map['model.layers.1.mlp.down_proj.weight'];
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  assertCleanError(keel(['--model', dir, ...PROMPT]), /model\.layers\.1\.mlp\.down_proj\.weight/);
});

test('a prompt longer than the context is refused with both lengths', () => {
  const ids = Array.from({ length: 130 }, (_, i) => 3 + (i % 200)).join(',');
  assertCleanError(keel(['--model', join(FIXTURES_DIR, 'llama-gqa'), '--prompt-ids', ids]), /maximum context length is 128 tokens/);
});

test('invalid sampling parameters name the flag, before any model loads', () => {
  // A model that does not exist: the flag's error comes first.
  const model = ['--model', '/nonexistent/model'];
  assertCleanError(keel([...model, ...PROMPT, '--top-p', '1.5']), /^keel: --top-p must be a number in \(0, 1\] \(got 1\.5\)$/m);
  assertCleanError(keel([...model, ...PROMPT, '--temperature=-1']), /^keel: --temperature must be/m);
  assertCleanError(keel([...model, ...PROMPT, '--n', '0']), /^keel: --n must be/m);
  assertCleanError(keel([...model, ...PROMPT, '--max-tokens', 'lots']), /--max-tokens expects an integer|--max-tokens expects a number/);
  assertCleanError(keel([...model, ...PROMPT, '--logit-bias', '{"7": 200}']), /^keel: --logit-bias key "7" must map to a number in \[-100, 100\] \(got 200\)$/m);
  assertCleanError(keel([...model, ...PROMPT, '--logit-bias', '7:1']), /^keel: --logit-bias expects JSON/m);
  assertCleanError(keel([...model, ...PROMPT, '--allowed-token-ids', '1,x']), /^keel: --allowed-token-ids expects a number \(got "x"\)$/m);
});

test('invalid engine options name the flag, before any weights load', () => {
  assertCleanError(keel([...PROMPT, '--block-size', '0']), /^keel: --block-size must be a positive integer/m);
  assertCleanError(keel([...PROMPT, '--gpu-memory-utilization', '2']), /^keel: --gpu-memory-utilization must be in/m);
  assertCleanError(keel([...PROMPT, '--max-model-len', '99999']), /^keel: --max-model-len 99999 exceeds the model's context length/m);
});

test('an unknown flag or command is met with the nearest one, and exits 2 as usage errors do', () => {
  assert.equal(keel([...PROMPT, '--top_p', '0.5']).status, 2);
  assertCleanError(keel([...PROMPT, '--top_p', '0.5']), /^keel: unknown option --top_p \(did you mean --top-p\?\): see keel generate --help$/m);
  assertCleanError(keel([...PROMPT, '--temp', '0']), /did you mean --temperature\?/);
  const command = spawnSync(BIN, ['genrate'], { encoding: 'utf8' });
  assertCleanError({ status: command.status, stderr: command.stderr }, /unknown command "genrate" \(did you mean generate\?\)/);
  const suite = spawnSync(BIN, ['bench', 'latncy'], { encoding: 'utf8' });
  assertCleanError({ status: suite.status, stderr: suite.stderr }, /unknown benchmark "latncy" \(did you mean latency\?\)/);
});

test('a missing model directory is named', (t) => {
  const dir = tempDir(t);
  rmSync(dir, { recursive: true });
  assertCleanError(keel(['--model', dir, ...PROMPT]), /model directory not found/);
});

test('speculative flags a user gets wrong are errors that say what to change', () => {
  const model = ['--model', join(FIXTURES_DIR, 'llama-gqa'), ...PROMPT];
  assertCleanError(keel([...model, '--num-speculative-tokens', '3']), /speculative flags need --speculative-method or --speculative-model DIR/);
  assertCleanError(keel([...model, '--speculative-method', 'lookahead']), /--speculative-method must be one of ngram, draft, medusa/);
  assertCleanError(keel([...model, '--speculative-method', 'medusa']), /medusa needs the heads' directory/);
  assertCleanError(keel([...model, '--speculative-method', 'medusa', '--speculative-model', join(FIXTURES_DIR, 'spec-heads', 'medusa-llama-gqa'), '--speculative-tree', '[0, 1]']), /--speculative-tree must be a list of paths of ranks/);
  assertCleanError(keel([...model, '--speculative-method', 'draft']), /needs a draft model/);
  assertCleanError(keel([...model, '--speculative-method', 'ngram', '--ngram-min', '5', '--ngram-max', '3']), /--ngram-min 5 is more than ngramMax 3/);
  assertCleanError(keel([...model, '--speculative-method', 'ngram', '--num-speculative-tokens', '0']), /--num-speculative-tokens must be a positive integer/);
  assertCleanError(keel([...model, '--speculative-model', '/nonexistent/draft']), /model directory not found: \/nonexistent\/draft/);
});

test('keel generate with speculative flags prints what it prints without them', () => {
  const args = ['generate', '--backend', 'cpu', '--no-progress', '--model', join(FIXTURES_DIR, 'llama-gqa'), '--prompt-ids', '5,6,7,5,6', '--max-tokens', '16', '--temperature', '0', '--json'];
  const plain = spawnSync(BIN, args, { encoding: 'utf8' });
  assert.equal(plain.status, 0, plain.stderr);
  for (const flags of [['--speculative-method', 'ngram', '--ngram-min', '1'], ['--speculative-model', join(FIXTURES_DIR, 'llama-gqa'), '--num-speculative-tokens', '3']]) {
    const speculative = spawnSync(BIN, [...args, ...flags], { encoding: 'utf8' });
    assert.equal(speculative.status, 0, speculative.stderr);
    assert.equal(speculative.stdout, plain.stdout, flags.join(' '));
  }
});
