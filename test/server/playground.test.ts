import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { startTinyServer, type TinyServer } from './tiny-server.ts';

// The web playground in headless Chromium: it loads, streams a chat reply and shows engine state.

const CHROMIUM = '/usr/bin/chromium';
// The GPU host carries neither playwright-core (a dev dependency) nor a browser.
const playwright = await import('playwright-core').catch((error: NodeJS.ErrnoException) => {
  if (error.code === 'ERR_MODULE_NOT_FOUND') return null;
  throw error;
});
const skip = !playwright
  ? 'playwright-core is not installed'
  : existsSync(CHROMIUM)
    ? false
    : `${CHROMIUM} is missing (apt-get install -y chromium)`;

let server: TinyServer;
let browser: Browser;

before(async () => {
  if (skip) return;
  server = await startTinyServer({ server: { servedModelName: 'tiny-playground' } });
  browser = await playwright!.chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
});
after(async () => {
  if (skip) return;
  await browser.close();
  await server.close();
});

test('the playground streams a chat reply and shows live engine stats', { skip }, async () => {
  const page = await browser.newPage();
  const pageErrors: string[] = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  page.on('console', (message) => {
    if (message.type() === 'error') pageErrors.push(message.text());
  });
  await page.goto(server.url);
  assert.equal(await page.title(), 'Keel playground');
  await page.locator('#model-name', { hasText: 'tiny-playground' }).waitFor();

  await page.fill('#seed', '42');
  await page.fill('#max-tokens', '24');
  await page.fill('#prompt', 'hello world');
  await page.click('#send');

  const reply = page.locator('.message.assistant');
  await reply.locator('xpath=self::*[@data-state="done"]').waitFor({ timeout: 10_000 });
  const meta = await reply.locator('.meta').textContent();
  assert.match(meta ?? '', /\d+ tokens/);
  assert.equal(await page.locator('.message.user .content').textContent(), 'hello world');
  // Replies are plain text, never markup.
  assert.equal(await reply.locator('.content *').count(), 0);

  await page.waitForFunction(() => Number(document.getElementById('stat-generated')?.textContent?.replace(/\D/g, '')) > 0);
  for (const id of ['stat-running', 'stat-waiting', 'stat-free', 'stat-used', 'stat-cached']) {
    assert.match((await page.locator(`#${id}`).textContent()) ?? '', /^\d+$/, id);
  }
  assert.match((await page.locator('#stat-tps').textContent()) ?? '', /^\d+\.\d$/);
  assert.match((await page.locator('#stat-hit-rate').textContent()) ?? '', /%$/);
  assert.match((await page.locator('#stat-kv-usage').textContent()) ?? '', /of 256 blocks/);
  assert.deepEqual(pageErrors, []);
});

test('a second message continues the conversation; New chat clears it', { skip }, async () => {
  const page = await browser.newPage();
  await page.goto(server.url);
  for (const text of ['first', 'second']) {
    await page.fill('#max-tokens', '4');
    await page.fill('#prompt', text);
    await page.press('#prompt', 'Enter');
    await page.locator('.message.assistant[data-state="done"]').nth(text === 'first' ? 0 : 1).waitFor();
  }
  assert.equal(await page.locator('.message').count(), 4);
  // The second request carried the whole conversation, so its prompt was longer.
  const chats = server.logs.filter((l) => l.path === '/v1/chat/completions').slice(-2);
  assert.ok(Number(chats[1].prompt_tokens) > Number(chats[0].prompt_tokens) + 4, JSON.stringify(chats));
  await page.click('#reset');
  assert.equal(await page.locator('.message').count(), 0);
  assert.equal(await page.locator('#empty-state').isVisible(), true);
});

test('max tokens past the context are capped to the room the conversation leaves', { skip }, async () => {
  const page = await browser.newPage();
  await page.goto(server.url);
  await page.fill('#max-tokens', '100000');
  await page.fill('#prompt', 'hello');
  await page.press('#prompt', 'Enter');
  const reply = page.locator('.message.assistant');
  await reply.locator('xpath=self::*[@data-state="done" or @data-state="error"]').waitFor({ timeout: 10_000 });
  assert.equal(await reply.getAttribute('data-state'), 'done', (await reply.locator('.meta').textContent()) ?? '');
  const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { max_model_len: number }[] };
  assert.equal(await page.locator('#max-tokens').getAttribute('max'), String(models.data[0].max_model_len));
});
