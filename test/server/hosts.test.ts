import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, test } from 'node:test';
import { startTinyServer, type TinyServer } from './tiny-server.ts';

// DNS rebinding: a web page on attacker.example whose name the attacker points at 127.0.0.1 makes
// the browser send same-origin requests (Host and Origin both attacker.example) to the server.
// Only the Host header tells them apart, so a server bound to loopback answers only the loopback
// names, and an Origin must name an allowed host as well as match the Host.

interface Answer {
  status: number;
  body: { error?: { code: string | null; message: string } };
}

/** A request with the Host header we choose (fetch does not let us set it). */
function requestWithHost(url: string, path: string, host: string, headers: Record<string, string> = {}, body?: unknown): Promise<Answer> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, path, method: body === undefined ? 'GET' : 'POST', headers: { host, 'content-type': 'application/json', ...headers } },
      (res) => {
        let text = '';
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text.startsWith('{') ? JSON.parse(text) : {} }));
      },
    );
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

const COMPLETION = { prompt: [1, 2], max_tokens: 1 };

let server: TinyServer;
let port: string;

before(async () => {
  server = await startTinyServer({ server: { logLevel: 'silent' } });
  port = new URL(server.url).port;
});
after(() => server.close());

test('bound to loopback without an API key, a rebound name is refused, with or without an Origin', { timeout: 20_000 }, async () => {
  const evil = `attacker.example:${port}`;
  const rebound = await requestWithHost(server.url, '/v1/completions', evil, { origin: `http://${evil}` }, COMPLETION);
  assert.equal(rebound.status, 403);
  assert.equal(rebound.body.error?.code, 'host_not_allowed');
  assert.match(rebound.body.error?.message ?? '', /--allowed-hosts/);
  assert.equal((await requestWithHost(server.url, '/v1/models', evil)).status, 403);
  assert.equal((await requestWithHost(server.url, '/', evil)).status, 403);
});

test('the loopback names are allowed, as Host and as Origin', { timeout: 20_000 }, async () => {
  for (const name of ['127.0.0.1', 'localhost', 'LOCALHOST', '[::1]']) {
    const host = `${name}:${port}`;
    assert.equal((await requestWithHost(server.url, '/v1/completions', host, {}, COMPLETION)).status, 200, host);
    assert.equal((await requestWithHost(server.url, '/v1/completions', host, { origin: `http://${host}` }, COMPLETION)).status, 200, host);
  }
});

test('an Origin must match the Host it is sent to', { timeout: 20_000 }, async () => {
  const host = `127.0.0.1:${port}`;
  for (const origin of [`http://localhost:${port}`, 'https://evil.example', 'null', `http://127.0.0.1:${Number(port) + 1}`, 'file://']) {
    const answer = await requestWithHost(server.url, '/v1/completions', host, { origin }, COMPLETION);
    assert.equal(answer.status, 403, origin);
    assert.equal(answer.body.error?.code, 'cross_origin', origin);
  }
});

test('--allowed-hosts replaces the default list; * allows any host', { timeout: 30_000 }, async () => {
  const named = await startTinyServer({ server: { allowedHosts: ['keel.internal'], logLevel: 'silent' } });
  const open = await startTinyServer({ server: { allowedHosts: ['*'], logLevel: 'silent' } });
  try {
    const namedPort = new URL(named.url).port;
    assert.equal((await requestWithHost(named.url, '/health', `keel.internal:${namedPort}`)).status, 200);
    assert.equal((await requestWithHost(named.url, '/health', 'KEEL.internal')).status, 200);
    assert.equal((await requestWithHost(named.url, '/health', `127.0.0.1:${namedPort}`)).status, 403);
    assert.equal((await requestWithHost(open.url, '/health', 'anything.example')).status, 200);
  } finally {
    await named.close();
    await open.close();
  }
});
