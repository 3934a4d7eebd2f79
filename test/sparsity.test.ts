import assert from 'node:assert/strict';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openCheckpoint } from '../src/checkpoint/checkpoint.ts';
import { DEFAULT_MODEL_DIR } from '../src/engine/load-engine.ts';
import { LLM } from '../src/engine/llm.ts';
import { readModelArchitecture } from '../src/models/registry.ts';
import { pruneCheckpoint } from '../src/prune/prune-checkpoint.ts';
import { hostTensorToFloat32 } from '../src/tensor/host-dtype.ts';
import { Tokenizer } from '../src/tokenizer/tokenizer.ts';
import { tempDir } from './helpers/model-temp-dir.ts';

const CALIBRATION = fileURLToPath(new URL('../tools/oracle/make_fixtures.py', import.meta.url));
const PROMPTS = ['def fibonacci(n):', 'import os\n'];

async function greedy(options: Parameters<typeof LLM.load>[0]): Promise<number[][]> {
  const llm = await LLM.load({ backend: 'cpu', showProgress: false, ...options });
  try {
    const outputs = await llm.generate(PROMPTS, { temperature: 0, maxTokens: 12, ignoreEos: true });
    return outputs.map((o) => o.outputs[0].tokenIds);
  } finally {
    await llm.close();
  }
}

test('keel prune writes a 2:4 checkpoint that declares its sparsity; it loads sparse and generates what its weights loaded dense do', async (t) => {
  const dir = tempDir(t);
  const output = join(dir, 'pruned');
  const reports = pruneCheckpoint({ model: DEFAULT_MODEL_DIR, method: 'magnitude', pattern: '2:4', samples: [], output });
  const architecture = readModelArchitecture(output);
  assert.equal(architecture.quantization, null);
  assert.equal(architecture.sparsity?.pattern, '2:4');
  assert.equal(reports.length, 7 * architecture.config.numLayers, 'q, k, v, o, gate, up and down of every layer');
  const ckpt = openCheckpoint(output);
  try {
    for (const { name } of reports) {
      assert.equal(ckpt.info(name).dtype, 'BF16');
      const w = hostTensorToFloat32(ckpt.read(name));
      for (let at = 0; at < w.length; at += 4) assert.ok([0, 1, 2, 3].filter((i) => w[at + i] !== 0).length <= 2, `${name}: group at ${at}`);
    }
    // Embeddings (tied to the LM head) and norms are copied as they are.
    const original = openCheckpoint(DEFAULT_MODEL_DIR);
    assert.deepEqual(ckpt.read('model.embed_tokens.weight').data, original.read('model.embed_tokens.weight').data);
    original.close();
  } finally {
    ckpt.close();
  }
  // The same weights without the declaration: loaded dense.
  const denseDir = join(dir, 'dense');
  cpSync(output, denseDir, { recursive: true });
  const config = JSON.parse(readFileSync(join(denseDir, 'config.json'), 'utf8')) as Record<string, unknown>;
  delete config.quantization_config;
  writeFileSync(join(denseDir, 'config.json'), JSON.stringify(config));
  const sparse = await greedy({ model: output });
  assert.deepEqual(sparse, await greedy({ model: denseDir }));
  assert.deepEqual(await greedy({ model: denseDir, sparsity: '2:4' }), sparse, '--sparsity 2:4 on the undeclared checkpoint');
  assert.notDeepEqual(sparse, await greedy({ model: DEFAULT_MODEL_DIR }), 'pruning changed the model');
});

test('wanda prunes with calibration and writes a checkpoint that loads and generates', async (t) => {
  const tokens = Tokenizer.load(DEFAULT_MODEL_DIR).encode(readFileSync(CALIBRATION, 'utf8'), { addSpecialTokens: false });
  const samples = [tokens.slice(0, 64), tokens.slice(64, 128)];
  const output = join(tempDir(t), 'wanda');
  const reports = pruneCheckpoint({ model: DEFAULT_MODEL_DIR, method: 'wanda', pattern: '2:4', samples, output });
  const [wanda, magnitude] = reports.reduce(([w, m], r) => [w + r.error, m + r.magnitudeError], [0, 0]);
  assert.ok(wanda < magnitude, `wanda's summed output error ${wanda} vs magnitude's ${magnitude} on the calibration inputs`);
  const [first] = await greedy({ model: output });
  assert.equal(first.length, 12);
});

test('--sparsity 2:4 on a dense checkpoint fails naming the first weight that is not 2:4', async () => {
  await assert.rejects(LLM.load({ backend: 'cpu', showProgress: false, sparsity: '2:4' }), /model\.layers\.0\.self_attn\.q_proj\.weight is not 2:4 sparse/);
  await assert.rejects(LLM.load({ backend: 'cpu', showProgress: false, sparsity: '2:4', quantization: 'int8' }), /does not combine with quantization int8/);
});

test('dummy weights with --sparsity 2:4 are pruned by magnitude and run', async () => {
  const [first] = await greedy({ loadFormat: 'dummy', sparsity: '2:4' });
  assert.equal(first.length, 12);
});

test('keel prune refuses a vision-language checkpoint, naming why', (t) => {
  const model = fileURLToPath(new URL('./fixtures/gemma3-vl', import.meta.url));
  assert.throws(() => pruneCheckpoint({ model, method: 'magnitude', pattern: '2:4', samples: [], output: join(tempDir(t), 'pruned') }), /is a vision-language checkpoint: keel prune writes text-only ones/);
});
