import assert from 'node:assert/strict';
import { test } from 'node:test';
import { listLoraFixtures } from '../helpers/lora-parity.ts';
import { TEST_BACKEND } from './test-backend.ts';
import { metricValue, startTinyServer } from './tiny-server.ts';
import { wordLevelBaseModel } from './word-level-base-model.ts';

// A data-parallel replica restarted after its process died (docs/parallelism.md) serves the LoRA
// adapters loaded through the API before its death, as the other replica does: its settings
// name none of them, so it loads them before the router sends it requests.

const gpus = TEST_BACKEND === 'cuda' ? (await import('../../src/backend/cuda/availability.ts')).cudaAvailability() : null;
const skip = gpus !== null && (!gpus.ok || gpus.deviceCount < 2) ? 'two replicas on CUDA need two GPUs' : false;

test('a restarted replica serves the adapters loaded at run time before its death, with the same tokens', { skip, timeout: 180_000 }, async () => {
  const [fixture] = listLoraFixtures();
  const base = wordLevelBaseModel(fixture.base.dir);
  const server = await startTinyServer({ modelDir: base.dir, engine: { numKvBlocks: 64, blockSize: 4, enableLora: true, maxLoras: 2, maxLoraRank: 8, dataParallelSize: 2 } });
  try {
    const post = (path: string, body: unknown) => fetch(`${server.url}/v1/${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal((await post('load_lora_adapter', { lora_name: fixture.name, lora_path: fixture.dir })).status, 200);
    const prompts = Array.from({ length: 6 }, (_, i) => Array.from({ length: 6 + i }, (_, k) => ((i * 37 + k * 11) % 250) + 3));
    const complete = async (prompt: number[]) => {
      const response = await post('completions', { model: fixture.name, prompt, max_tokens: 8, temperature: 0, ignore_eos: true });
      const text = await response.text();
      assert.equal(response.status, 200, text);
      return (JSON.parse(text) as { choices: { text: string }[] }).choices[0].text;
    };
    // One at a time: each on the replica the router picks, every one with the adapter.
    const before: string[] = [];
    for (const prompt of prompts) before.push(await complete(prompt));
    server.engine.kill(1);
    const deadline = Date.now() + 60_000;
    while (server.engine.deadReplicas.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    while (server.engine.deadReplicas.length > 0) {
      assert.ok(Date.now() < deadline, 'the replica came back');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const scrape = async () => metricValue(await (await fetch(`${server.url}/metrics`)).text(), 'keel_replica_prompt_tokens_total', { replica: '1' }) ?? 0;
    const restartedBefore = await scrape();
    // All at once: the router spreads them over both replicas, the restarted one included.
    assert.deepEqual(await Promise.all(prompts.map(complete)), before, 'the same tokens with the adapter on either replica');
    assert.ok((await scrape()) > restartedBefore, 'the restarted replica ran some of them');
  } finally {
    await server.close();
    base.remove();
  }
});
