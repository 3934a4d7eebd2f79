import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { serve } from '../../src/openai-server.ts';
import { TEST_BACKEND } from './test-backend.ts';

// `serve` (the package's `keel/server` entry): the server `keel serve` runs, started and closed
// from a program over the default model.

const engine = { backend: TEST_BACKEND, showProgress: false, numKvBlocks: 64 } as const;
const quiet = new Writable({ write: (_chunk, _encoding, done) => done() });

test('serve answers the OpenAI API on the port it picked, under the model name given, and close ends server and engine', async () => {
  const server = await serve({ engine, server: { port: 0, servedModelName: 'tiny', logStream: quiet } });
  try {
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(server.model, 'tiny');
    const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.deepEqual(models.data.map((m) => m.id), ['tiny']);
    const response = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny', prompt: 'def add(a, b):', max_tokens: 4, temperature: 0, ignore_eos: true }),
    });
    assert.equal(response.status, 200);
    const completion = (await response.json()) as { usage: { completion_tokens: number } };
    assert.equal(completion.usage.completion_tokens, 4);
  } finally {
    assert.deepEqual(await server.close(), { cut: 0 });
  }
  await assert.rejects(fetch(`${server.url}/v1/models`), 'nothing listens after close');
});

test('a server that cannot listen is refused with the cause, its engine closed, and the one on that port serves on', async () => {
  const first = await serve({ engine, server: { port: 0, logStream: quiet } });
  try {
    const port = Number(new URL(first.url).port);
    await assert.rejects(serve({ engine, server: { port, logStream: quiet } }), /EADDRINUSE|in use/);
    assert.equal((await fetch(`${first.url}/v1/models`)).status, 200);
  } finally {
    await first.close();
  }
});
