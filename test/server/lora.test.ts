import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';
import { listLoraFixtures, type LoraFixture } from '../helpers/lora-parity.ts';
import type { OracleFixture } from '../helpers/oracle-fixtures.ts';
import { assertGreedyMatches } from '../helpers/transformers-parity.ts';
import { TEST_BACKEND } from './test-backend.ts';
import { startTinyServer, type TinyServer } from './tiny-server.ts';
import { wordLevelBaseModel } from './word-level-base-model.ts';

// The official SDK, unchanged, naming LoRA adapters as its model; adapters loaded and unloaded
// through vLLM's endpoints while serving. The base model is the llama-gqa fixture with a word-level
// tokenizer whose token i reads "t<i>", so completions' text gives their token ids back.

const fixtures = listLoraFixtures();
const [first, second] = fixtures;
const BASE = 'base';
let server: TinyServer;
let client: OpenAI;
let dir: string;

let base: { dir: string; remove: () => void };

before(async () => {
  base = wordLevelBaseModel(first.base.dir);
  dir = base.dir;
  server = await startTinyServer({ modelDir: dir, server: { servedModelName: BASE }, engine: { enableLora: true, maxLoras: 2, maxLoraRank: 8 } });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'not-checked', maxRetries: 0 });
});
after(async () => {
  await server.close();
  base.remove();
});

const post = (path: string, body: unknown) => fetch(`${server.url}/v1/${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
const greedy = TEST_BACKEND === 'cpu' ? 'exact' : 'top-candidates';

const parity = { backend: TEST_BACKEND, logitTolerance: TEST_BACKEND === 'cpu' ? 1e-4 : 0.125, greedy, acceptBf16ReferenceError: true } as const;
/** The token ids of a completion's text ("t12 t7 ..."). */
const tokensOf = (text: string) => text.trim().split(' ').map((t) => Number(t.slice(1)));

/** The greedy continuation of prompt `i` of `oracle` under `model`, checked against the oracle. */
async function checkCompletion(model: string, oracle: OracleFixture, i: number): Promise<void> {
  const completion = await client.completions.create({ model, prompt: oracle.oracle.prompts[i], max_tokens: oracle.oracle.max_new_tokens, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
  assert.equal(completion.model, model);
  assertGreedyMatches(tokensOf(completion.choices[0].text), oracle, i, parity);
}

const modelIds = async () => (await client.models.list()).data.map((m) => m.id);

test('adapters loaded at run time are listed, named as the model, batched with each other and the base model, and unloaded', async () => {
  assert.deepEqual(await modelIds(), [BASE]);
  await assert.rejects(client.completions.create({ model: first.name, prompt: [5, 6], max_tokens: 1 }), (e: unknown) => e instanceof OpenAI.NotFoundError && /The model `llama-gqa-all-r8` does not exist\. This server serves `base`\./.test(e.message));
  for (const fixture of fixtures) {
    const loaded = await post('load_lora_adapter', { lora_name: fixture.name, lora_path: fixture.dir });
    assert.equal(loaded.status, 200, await loaded.clone().text());
    assert.equal(await loaded.text(), `Success: LoRA adapter '${fixture.name}' added successfully.`);
  }
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => [m.id, (m as unknown as { parent: string | null }).parent]), [[BASE, null], ...fixtures.map((f) => [f.name, BASE])]);
  assert.equal((await client.models.retrieve(second.name)).id, second.name);

  // Every prompt under each adapter and the base model, all in flight together.
  const runs: [string, OracleFixture][] = [...fixtures.map((f: LoraFixture): [string, OracleFixture] => [f.name, f.merged]), [BASE, first.base]];
  await Promise.all(runs.flatMap(([model, oracle]) => oracle.oracle.prompts.map((_, i) => checkCompletion(model, oracle, i))));

  const streamed: string[] = [];
  for await (const chunk of await client.completions.create({ model: second.name, prompt: second.merged.oracle.prompts[0], max_tokens: 24, temperature: 0, ignore_eos: true, stream: true } as OpenAI.CompletionCreateParamsStreaming)) {
    assert.equal(chunk.model, second.name);
    streamed.push(chunk.choices[0]?.text ?? '');
  }
  assertGreedyMatches(tokensOf(streamed.join('')), second.merged, 0, parity);

  const unloaded = await post('unload_lora_adapter', { lora_name: first.name });
  assert.equal(unloaded.status, 200);
  assert.equal(await unloaded.text(), `Success: LoRA adapter '${first.name}' removed successfully.`);
  assert.deepEqual(await modelIds(), [BASE, second.name]);
  await assert.rejects(client.completions.create({ model: first.name, prompt: [5, 6], max_tokens: 1 }), OpenAI.NotFoundError);
});

test('load and unload errors: 404 for an unknown adapter, 400 naming a bad path, rank, target, taken name or body', async () => {
  const error = async (response: Response) => ({ status: response.status, message: ((await response.json()) as { error: { message: string } }).error.message });
  const unknown = await error(await post('unload_lora_adapter', { lora_name: 'nobody' }));
  assert.equal(unknown.status, 404);
  assert.match(unknown.message, /no LoRA adapter named nobody is loaded/);
  const missing = await error(await post('load_lora_adapter', { lora_name: 'x', lora_path: join(dir, 'nowhere') }));
  assert.equal(missing.status, 400);
  assert.match(missing.message, /is not a PEFT adapter: it has no adapter_config.json/);

  const adapter = mkdtempSync(join(tmpdir(), 'keel-lora-bad-'));
  try {
    cpSync(second.dir, adapter, { recursive: true });
    const config = JSON.parse(readFileSync(join(adapter, 'adapter_config.json'), 'utf8'));
    writeFileSync(join(adapter, 'adapter_config.json'), JSON.stringify({ ...config, r: 16 }));
    const rank = await error(await post('load_lora_adapter', { lora_name: 'big', lora_path: adapter }));
    assert.equal(rank.status, 400);
    assert.match(rank.message, /rank 16 exceeds the max LoRA rank 8 \(--max-lora-rank\)/);
    writeFileSync(join(adapter, 'adapter_config.json'), JSON.stringify(config));
    const weights = readFileSync(join(adapter, 'adapter_model.safetensors'));
    // Same byte lengths: the header names another module.
    writeFileSync(join(adapter, 'adapter_model.safetensors'), Buffer.from(weights.toString('latin1').replaceAll('v_proj', 'x_proj'), 'latin1'));
    const target = await error(await post('load_lora_adapter', { lora_name: 'foreign', lora_path: adapter }));
    assert.equal(target.status, 400);
    assert.match(target.message, /adapts model\.layers\.1\.self_attn\.x_proj, which is not a layer Keel serves LoRA on/);
  } finally {
    rmSync(adapter, { recursive: true, force: true });
  }
  assert.equal((await post('load_lora_adapter', { lora_name: 'again', lora_path: second.dir })).status, 200);
  const taken = await error(await post('load_lora_adapter', { lora_name: 'again', lora_path: second.dir }));
  assert.equal(taken.status, 400);
  assert.match(taken.message, /named again is already loaded/);
  assert.equal((await error(await post('load_lora_adapter', { lora_name: BASE, lora_path: second.dir }))).status, 400);
  const body = await error(await post('load_lora_adapter', { lora_name: 'x' }));
  assert.equal(body.status, 400);
  assert.match(body.message, /lora_path/);
});

test('/metrics has vllm:lora_requests_info, the series the Gateway API Inference Extension reads for LoRA affinity', async () => {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('vllm:lora_requests_info{'));
  assert.ok(line, text);
  assert.match(line, /running_lora_adapters="",waiting_lora_adapters="",max_lora="2"/);
  const since = Number(line.slice(line.lastIndexOf(' ') + 1));
  assert.ok(since > 1.7e9 && since <= Date.now() / 1000, 'valued at when its labels last changed, in Unix seconds');
});
