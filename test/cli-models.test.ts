import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEFAULT_MODEL_DIR } from '../src/engine/load-engine.ts';
import { tempDir } from './helpers/model-temp-dir.ts';
import { FIXTURES_DIR } from './helpers/oracle-fixtures.ts';

const BIN = fileURLToPath(new URL('../bin/keel', import.meta.url));
const COMMIT = 'c'.repeat(40);

function keel(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(BIN, [...args, '--backend', 'cpu', '--no-progress'], { encoding: 'utf8', env: { ...process.env, ...env } });
}

/** One error line, no stack trace, a non-zero exit. */
function assertOneLineError(result: ReturnType<typeof keel>, pattern: RegExp): void {
  assert.notEqual(result.status, 0);
  assert.match(result.stderr, pattern);
  assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
}

/** The default model as a Hugging Face cache under HF_HOME holds it after a download of ORG/NAME. */
function hfHome(t: TestContext): string {
  const home = tempDir(t, 'keel-hf-home-');
  const folder = join(home, 'hub', 'models--keel-org--keel-tiny');
  cpSync(DEFAULT_MODEL_DIR, join(folder, 'snapshots', COMMIT), { recursive: true });
  mkdirSync(join(folder, 'refs'));
  writeFileSync(join(folder, 'refs', 'main'), COMMIT);
  return home;
}

test('--model ORG/NAME runs from the Hugging Face cache with HF_HUB_OFFLINE=1, as the directory would', (t) => {
  const args = ['generate', '--prompt', 'def add(a, b):', '--max-tokens', '8', '--temperature', '0'];
  const fromDir = keel([...args, '--model', DEFAULT_MODEL_DIR]);
  assert.equal(fromDir.status, 0, fromDir.stderr);
  const home = hfHome(t);
  for (const model of ['keel-org/keel-tiny', `keel-org/keel-tiny@${COMMIT}`]) {
    const fromCache = keel([...args, '--model', model], { HF_HOME: home, HF_HUB_OFFLINE: '1' });
    assert.equal(fromCache.status, 0, fromCache.stderr);
    assert.equal(fromCache.stdout, fromDir.stdout);
  }
  assertOneLineError(keel([...args, '--model', 'keel-org/keel-tiny@v2'], { HF_HOME: home, HF_HUB_OFFLINE: '1' }), /keel-org\/keel-tiny@v2 is not in the Hugging Face cache/);
});

test('a model directory without config.json, a checkpoint quantized in a format Keel does not read, a missing tokenizer: one line each, with what to do', (t) => {
  const empty = tempDir(t);
  assertOneLineError(keel(['generate', '--prompt', 'x', '--model', empty]), /has no config\.json: give a Hugging Face model directory/);

  const quantized = tempDir(t);
  cpSync(join(FIXTURES_DIR, 'llama-gqa'), quantized, { recursive: true });
  const config = JSON.parse(readFileSync(join(quantized, 'config.json'), 'utf8'));
  writeFileSync(join(quantized, 'config.json'), JSON.stringify({ ...config, quantization_config: { quant_method: 'hqq', nbits: 4 } }));
  assertOneLineError(keel(['generate', '--prompt-ids', '1,2', '--model', quantized]), /quant_method "hqq" is not supported; Keel reads gptq, awq, compressed-tensors \(pack-quantized, float-quantized\), fp8, mxfp4, bitsandbytes \(4-bit nf4\/fp4, 8-bit LLM\.int8\(\)\) and aqlm/);
  const awq = keel(['generate', '--prompt-ids', '3,4,5', '--max-tokens', '4', '--model', join(FIXTURES_DIR, 'quant-awq-int4')]);
  assert.equal(awq.status, 0, awq.stderr);

  const noTokenizer = join(FIXTURES_DIR, 'llama-gqa');
  assertOneLineError(keel(['generate', '--prompt', 'x', '--model', noTokenizer]), /llama-gqa has no tokenizer\.json, so a text --prompt cannot be tokenized: give token ids with --prompt-ids, or copy/);
  assertOneLineError(keel(['chat', '--message', 'x', '--model', noTokenizer]), /has no tokenizer\.json, so keel chat cannot render or read messages: copy the model's tokenizer\.json/);
});
