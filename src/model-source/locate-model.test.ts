import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { KeelError } from '../errors.ts';
import { tempDir } from '../../test/helpers/model-temp-dir.ts';
import { sha256, startFakeHub, type FakeFile, type FakeRepo } from '../../test/helpers/fake-hub.ts';
import { FIXTURES_DIR } from '../../test/helpers/oracle-fixtures.ts';
import { locateModel } from './locate-model.ts';

const COMMIT = 'a'.repeat(40);
const OLD_COMMIT = 'b'.repeat(40);
const REPO = 'keel-test/tiny-llama';

/** A fixture's files as a repository holds them, with the clutter Keel must not download. */
function fixtureFiles(name: string): FakeFile[] {
  const dir = join(FIXTURES_DIR, name);
  const files: FakeFile[] = readdirSync(dir)
    .filter((f) => f !== 'oracle.json')
    .map((f) => ({ path: f, bytes: readFileSync(join(dir, f)), lfs: f.endsWith('.safetensors') }));
  return [
    ...files,
    { path: 'README.md', bytes: Buffer.from('# tiny llama\n') },
    { path: 'pytorch_model.bin', bytes: Buffer.alloc(64, 7), lfs: true },
    { path: 'onnx/model.onnx', bytes: Buffer.alloc(64, 8), lfs: true },
  ];
}

/** A Hugging Face cache laid out as huggingface_hub writes it: blobs, relative links from the snapshot, refs. */
function pythonCache(t: TestContext, files: FakeFile[], refs: Record<string, string>, commit = COMMIT): string {
  const cache = tempDir(t, 'keel-hf-cache-');
  const folder = join(cache, `models--${REPO.replace('/', '--')}`);
  mkdirSync(join(folder, 'blobs'), { recursive: true });
  mkdirSync(join(folder, 'snapshots', commit), { recursive: true });
  for (const file of files) {
    writeFileSync(join(folder, 'blobs', sha256(file.bytes)), file.bytes);
    symlinkSync(join('..', '..', 'blobs', sha256(file.bytes)), join(folder, 'snapshots', commit, file.path));
  }
  for (const [ref, target] of Object.entries(refs)) {
    mkdirSync(join(folder, 'refs'), { recursive: true });
    writeFileSync(join(folder, 'refs', ref), target);
  }
  return cache;
}

const MODEL_FILES = fixtureFiles('llama-gqa').filter((f) => ['config.json', 'generation_config.json', 'model.safetensors'].includes(f.path));

async function rejects(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof KeelError, `a KeelError, not ${String(error)}`);
    assert.match(error.message, pattern);
    return true;
  });
}

test('a repo id resolves in the Hugging Face cache offline: refs/main, a tag, a commit; HF_HUB_CACHE over HF_HOME', async (t) => {
  const cache = pythonCache(t, MODEL_FILES, { main: COMMIT, v1: COMMIT });
  const snapshot = join(cache, `models--keel-test--tiny-llama`, 'snapshots', COMMIT);
  const offline = { HF_HUB_CACHE: cache, HF_HOME: '/nonexistent', HF_HUB_OFFLINE: '1' };
  for (const model of [REPO, `${REPO}@v1`, `${REPO}@${COMMIT}`]) {
    assert.deepEqual(await locateModel(model, { showProgress: false, env: offline }), { path: snapshot, name: model });
  }
  // HF_HOME holds hub/ beneath it.
  const home = tempDir(t, 'keel-hf-home-');
  const homeCache = pythonCache(t, MODEL_FILES, { main: COMMIT });
  symlinkSync(homeCache, join(home, 'hub'));
  const found = await locateModel(REPO, { showProgress: false, env: { HF_HOME: home, HF_HUB_OFFLINE: 'true' } });
  assert.equal(found.path, join(home, 'hub', 'models--keel-test--tiny-llama', 'snapshots', COMMIT));
});

test('offline, a revision or a file the cache lacks is an error that says what is missing and what to do', async (t) => {
  const cache = pythonCache(t, MODEL_FILES.filter((f) => f.path !== 'model.safetensors'), { main: COMMIT });
  const offline = { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '1' };
  await rejects(locateModel(REPO, { showProgress: false, env: offline }), /lacks model\.safetensors.*HF_HUB_OFFLINE forbids downloading it: unset HF_HUB_OFFLINE/);
  await rejects(locateModel(`${REPO}@v2`, { showProgress: false, env: offline }), /keel-test\/tiny-llama@v2 is not in the Hugging Face cache \(.*\), and HF_HUB_OFFLINE/);
});

test('a model already in the cache is used without the network', async (t) => {
  const cache = pythonCache(t, MODEL_FILES, { main: COMMIT });
  // No hub answers at this address: any request would fail.
  const env = { HF_HUB_CACHE: cache, HF_ENDPOINT: 'http://127.0.0.1:9' };
  assert.equal((await locateModel(REPO, { showProgress: false, env })).path, join(cache, 'models--keel-test--tiny-llama', 'snapshots', COMMIT));
});

/** A fake hub serving `repo`, closed when the test ends, and the environment that points at it. */
async function hubFor(t: TestContext, repo: FakeRepo) {
  const hub = await startFakeHub([repo]);
  t.after(() => hub.close());
  const cache = tempDir(t, 'keel-hf-cache-');
  return { hub, cache, env: { HF_HUB_CACHE: cache, HF_ENDPOINT: hub.url } as NodeJS.ProcessEnv };
}

test('a repo id not in the cache is downloaded from the hub: only the files Keel needs, in huggingface_hub\'s layout', async (t) => {
  const files = fixtureFiles('llama-sharded');
  const { hub, cache, env } = await hubFor(t, { repo: REPO, refs: { main: COMMIT }, files, token: 'hf_secret' });
  const located = await locateModel(REPO, { showProgress: false, env: { ...env, HF_TOKEN: 'hf_secret' } });
  const folder = join(cache, 'models--keel-test--tiny-llama');
  assert.equal(located.path, join(folder, 'snapshots', COMMIT));
  assert.equal(readFileSync(join(folder, 'refs', 'main'), 'utf8'), COMMIT);
  const wanted = files.filter((f) => f.path.endsWith('.safetensors') || f.path.endsWith('.json'));
  assert.deepEqual(readdirSync(located.path).sort(), wanted.map((f) => f.path).sort());
  for (const file of wanted) {
    assert.deepEqual(readFileSync(join(located.path, file.path)), file.bytes, file.path);
    // Weights are named by their sha256, as huggingface_hub names LFS blobs; the links are relative.
    if (file.lfs) assert.equal(readlinkSync(join(located.path, file.path)), join('..', '..', 'blobs', sha256(file.bytes)));
  }
  const downloaded = hub.requests.filter((r) => r.path.includes('/resolve/')).map((r) => r.path.split('/').pop());
  for (const unwanted of ['README.md', 'pytorch_model.bin', 'model.onnx']) assert.ok(!downloaded.includes(unwanted), `${unwanted} not downloaded`);
  assert.ok(hub.requests.every((r) => r.authorization === 'Bearer hf_secret'), 'HF_TOKEN sent with every request');

  // Now cached: a second load asks the hub nothing.
  const asked = hub.requests.length;
  assert.equal((await locateModel(REPO, { showProgress: false, env })).path, located.path);
  assert.equal(hub.requests.length, asked);
});

test('a download cut short resumes from its .incomplete part with a range request', async (t) => {
  const files = fixtureFiles('llama-gqa');
  const weights = files.find((f) => f.path === 'model.safetensors')!;
  const { hub, cache, env } = await hubFor(t, { repo: REPO, refs: { main: COMMIT }, files });
  const blobs = join(cache, 'models--keel-test--tiny-llama', 'blobs');
  mkdirSync(blobs, { recursive: true });
  const half = Math.floor(weights.bytes.length / 2);
  writeFileSync(join(blobs, `${sha256(weights.bytes)}.incomplete`), weights.bytes.subarray(0, half));
  const located = await locateModel(REPO, { showProgress: false, env });
  assert.deepEqual(readFileSync(join(located.path, 'model.safetensors')), weights.bytes);
  assert.ok(!existsSync(join(blobs, `${sha256(weights.bytes)}.incomplete`)));
  const ranges = hub.requests.filter((r) => r.path.endsWith('/model.safetensors')).map((r) => r.range);
  assert.ok(ranges.includes(`bytes=${half}-${weights.bytes.length - 1}`), `asked for the rest only: ${JSON.stringify(ranges)}`);
});

test('a revision, a gated repository and a repository without safetensors are clear errors', async (t) => {
  const { env } = await hubFor(t, { repo: REPO, refs: { main: COMMIT, v1: OLD_COMMIT }, files: fixtureFiles('llama-gqa') });
  assert.equal((await locateModel(`${REPO}@v1`, { showProgress: false, env })).path.endsWith(OLD_COMMIT), true);
  await rejects(locateModel(`${REPO}@v9`, { showProgress: false, env }), /keel-test\/tiny-llama has no revision "v9" on http:\/\/127\.0\.0\.1:\d+: give a branch, a tag or a commit/);
  await rejects(locateModel('keel-test/nothing-here', { showProgress: false, env }), /no model keel-test\/nothing-here on http/);

  const gated = await hubFor(t, { repo: REPO, refs: { main: COMMIT }, files: fixtureFiles('llama-gqa'), token: 'hf_right' });
  await rejects(locateModel(REPO, { showProgress: false, env: gated.env }), /gated, private or missing.*set HF_TOKEN/);
  await rejects(locateModel(REPO, { showProgress: false, env: { ...gated.env, HF_TOKEN: 'hf_wrong' } }), /the token in HF_TOKEN may not read it/);

  const binOnly = fixtureFiles('llama-gqa').filter((f) => f.path !== 'model.safetensors');
  const noWeights = await hubFor(t, { repo: REPO, refs: { main: COMMIT }, files: binOnly });
  await rejects(locateModel(REPO, { showProgress: false, env: noWeights.env }), /has no model\.safetensors or model\.safetensors\.index\.json \(it has pytorch_model\.bin\).*safetensors/);

  const shards = fixtureFiles('llama-sharded').filter((f) => f.path !== 'model-00003-of-00007.safetensors');
  const missingShard = await hubFor(t, { repo: REPO, refs: { main: COMMIT }, files: shards });
  await rejects(locateModel(REPO, { showProgress: false, env: missingShard.env }), /lists the shard model-00003-of-00007\.safetensors, which the repository does not have/);
});

test('a directory without config.json, a file, or a quantized checkpoint is refused with what to give instead', async (t) => {
  const dir = tempDir(t);
  await rejects(locateModel(dir, { showProgress: false }), /has no config\.json: give a Hugging Face model directory .* or a repo id ORG\/NAME\[@REVISION\]/);
  writeFileSync(join(dir, 'weights.safetensors'), '');
  await rejects(locateModel(join(dir, 'weights.safetensors'), { showProgress: false }), /is a file: give/);
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'llama', quantization_config: { quant_method: 'hqq', nbits: 4 } }));
  await rejects(locateModel(dir, { showProgress: false }), /quant_method "hqq" is not supported; Keel reads gptq, awq, compressed-tensors \(pack-quantized, float-quantized\), fp8, mxfp4, bitsandbytes \(4-bit nf4\/fp4, 8-bit LLM\.int8\(\)\) and aqlm/);
  await rejects(locateModel('./no/such/dir/here', { showProgress: false }), /model directory not found: \.\/no\/such\/dir\/here/);
});

test('a .gguf file is a model as it is, named by its file; a missing one says so', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'Tiny-Q8_0.gguf'), 'GGUF');
  assert.deepEqual(await locateModel(join(dir, 'Tiny-Q8_0.gguf'), { showProgress: false }), { path: join(dir, 'Tiny-Q8_0.gguf'), name: 'Tiny-Q8_0' });
  await rejects(locateModel(join(dir, 'other.gguf'), { showProgress: false }), /GGUF file not found: .*other\.gguf/);
});
