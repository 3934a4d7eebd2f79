import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { HOST_PHASES } from '../../src/engine/step-timeline.ts';
import { stepTimelinePath } from '../../src/server/engine-host/engine-replicas.ts';
import { exitWithin, spawnServe, type ServeProcess } from './keel-serve-process.ts';
import { TEST_BACKEND } from './test-backend.ts';
import { tinyChatModelDir } from './tiny-chat-model.ts';
import { metricValue, startTinyServer } from './tiny-server.ts';

// keel serve --step-timeline FILE: every engine step the server makes is a JSON line in FILE (one
// file per replica with --data-parallel-size), the whole of it there once the server has stopped
// on a signal; POST /stop_profile and /start_profile pause and resume it, and exist only with it.

const gpus = TEST_BACKEND === 'cuda' ? (await import('../../src/backend/cuda/availability.ts')).cudaAvailability() : null;
const twoReplicas = gpus !== null && (!gpus.ok || gpus.deviceCount < 2) ? 'two replicas on CUDA need two GPUs' : false;

const model = tinyChatModelDir();
let dir: string;
const spawned: ServeProcess[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'keel-serve-timeline-'));
});
after(() => {
  for (const server of spawned) server.child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
  model.remove();
});

interface Line {
  replica?: number;
  step: number;
  kind: string;
  batch_size: number;
  prefill_tokens: number;
  decode_rows: number;
  verify_tokens: number;
  host_start_ms: number;
  host_end_ms: number;
  host_ms: Record<string, number>;
  device: { start_ms: number; prepare_ms: number; forward_ms: number; sampling_ms: number; gap_before_ms: number | null } | null;
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
}

function readLines(path: string): Line[] {
  const text = readFileSync(path, 'utf8');
  assert.ok(text === '' || text.endsWith('\n'), `${path} ends with a whole line`);
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Line);
}

/** Checks each line's fields, and that its steps run 0, 1, ... from each recording's start (a line with step 0). */
function checkSteps(lines: Line[], replica: number | null): void {
  assert.ok(lines.length > 0, 'steps were recorded');
  lines.forEach((line, i) => {
    const fields = ['step', 'kind', 'batch_size', 'prefill_tokens', 'decode_rows', 'verify_tokens', 'host_start_ms', 'host_end_ms', 'host_ms', 'device'];
    assert.deepEqual(Object.keys(line), replica === null ? fields : ['replica', ...fields], `line ${i}`);
    if (replica !== null) assert.equal(line.replica, replica);
    assert.ok(line.step === 0 || line.step === lines[i - 1].step + 1, `line ${i}: step ${line.step} follows step ${lines[i - 1]?.step}`);
    assert.deepEqual(Object.keys(line.host_ms), [...HOST_PHASES]);
    assert.ok(line.host_start_ms <= line.host_end_ms);
    assert.ok(line.batch_size >= 1, `line ${i}: a served step runs some sequence`);
    assert.ok(line.device === null || line.device.forward_ms > 0, `line ${i}: a launched step's forward takes time`);
  });
  assert.equal(lines[0].step, 0);
}

const sum = (lines: Line[], field: 'prefill_tokens' | 'decode_rows' | 'verify_tokens') => lines.reduce((t, l) => t + l[field], 0);

/** Unrelated prompts (no shared prefix: every prompt token is computed; `first` tells batches apart), each sent at once. */
async function completeAll(url: string, count: number, headers: Record<string, string> = {}, first = 0): Promise<Usage[]> {
  const bodies = Array.from({ length: count }, (_, i) => ({
    prompt: Array.from({ length: 5 + 7 * i }, (_, j) => (((first + i) * 31 + j * 7) % 250) + 3),
    max_tokens: 3 + 2 * i,
    temperature: 0,
    ignore_eos: true,
  }));
  return Promise.all(
    bodies.map(async (body) => {
      const response = await fetch(`${url}/v1/completions`, { method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(60_000) });
      const text = await response.text();
      assert.equal(response.status, 200, text);
      return (JSON.parse(text) as { usage: Usage }).usage;
    }),
  );
}

/** Every prompt token is prefilled once; each request's first token comes with its prompt's last chunk, every later one from a decode row. */
function checkCompositions(lines: Line[], usage: Usage[]): void {
  assert.equal(sum(lines, 'prefill_tokens'), usage.reduce((t, u) => t + u.prompt_tokens, 0));
  assert.equal(sum(lines, 'decode_rows'), usage.reduce((t, u) => t + u.completion_tokens - 1, 0));
  assert.equal(sum(lines, 'verify_tokens'), 0);
}

test('keel serve --step-timeline: every step the server ran is in the file, whole once SIGTERM has stopped it', async () => {
  const file = join(dir, 'one', 'steps.jsonl');
  const server = await spawnServe(model.dir, ['--step-timeline', file]);
  spawned.push(server);
  const usage = await completeAll(server.url, 4);
  // At once: the last steps are still held in the engine's thread, to be written on close.
  server.child.kill('SIGTERM');
  assert.deepEqual(await exitWithin(server, 30_000), { code: 0, signal: null }, server.stderr());
  const lines = readLines(file);
  checkSteps(lines, null);
  checkCompositions(lines, usage);
});

test('keel serve --step-timeline with --data-parallel-size 2: a file per replica, each line naming it, whole after Ctrl-C', { skip: twoReplicas }, async () => {
  const file = join(dir, 'two', 'steps.jsonl');
  const server = await spawnServe(model.dir, ['--step-timeline', file, '--data-parallel-size', '2'], { processGroup: true });
  spawned.push(server);
  const usage = await completeAll(server.url, 6);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  // To the whole group, as a terminal's Ctrl-C: the replicas' processes get it too, and leave the shutdown to the server.
  process.kill(-server.child.pid!, 'SIGINT');
  assert.deepEqual(await exitWithin(server, 30_000), { code: 0, signal: null }, server.stderr());
  assert.equal(existsSync(file), false, 'FILE itself is not written with several replicas');
  const perReplica = [0, 1].map((replica) => {
    assert.equal(stepTimelinePath(file, replica), join(dir, 'two', `steps.replica${replica}.jsonl`));
    const lines = readLines(stepTimelinePath(file, replica));
    checkSteps(lines, replica);
    // The replica's own prompts, as its counters have them.
    const counter = (name: string) => metricValue(metrics, name, { replica: String(replica) }) ?? 0;
    assert.equal(sum(lines, 'prefill_tokens'), counter('keel_replica_prompt_tokens_total') - counter('keel_replica_prefix_cache_hit_tokens_total'), `replica ${replica}`);
    return lines;
  });
  checkCompositions(perReplica.flat(), usage);
});

test('a replica that dies and restarts appends a recording of its own to its file', { skip: twoReplicas, timeout: 120_000 }, async () => {
  const file = join(dir, 'restart', 'steps.jsonl');
  const tiny = await startTinyServer({ modelDir: model.dir, engine: { dataParallelSize: 2, maxReplicaRestarts: 1 }, server: { stepTimeline: file } });
  try {
    const path = stepTimelinePath(file, 1);
    await completeAll(tiny.url, 4);
    const deadline = Date.now() + 5000;
    while (readLines(path).length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    const written = readLines(path);
    assert.ok(written.length > 0, 'replica 1 ran some of the requests, and their steps were written out');
    const restarted = new Promise<void>((resolve) => tiny.engine.onReplicaEvent((replica, event) => replica === 1 && event.kind === 'restarted' && resolve()));
    tiny.engine.kill(1);
    await restarted;
    const counter = async () => metricValue(await (await fetch(`${tiny.url}/metrics`)).text(), 'keel_replica_prompt_tokens_total', { replica: '1' }) ?? 0;
    const promptTokensBack = await counter();
    await completeAll(tiny.url, 6, {}, 100);
    const promptTokens = (await counter()) - promptTokensBack;
    assert.ok(promptTokens > 0, 'the restarted replica ran some of the new requests');
    await tiny.close();
    const lines = readLines(path);
    // What the first engine wrote out stays; a killed engine loses only the lines it still held.
    assert.deepEqual(lines.slice(0, written.length), written);
    const start = lines.findIndex((line, i) => i >= written.length && line.step === 0);
    assert.ok(start > 0, 'the restarted engine began a recording of its own');
    checkSteps(lines.slice(start), 1);
    assert.equal(sum(lines.slice(start), 'prefill_tokens'), promptTokens);
  } finally {
    await tiny.close();
  }
});

test('a write that fails (a full disk) ends the recording, said on stderr, and the server serves on', { skip: existsSync('/dev/full') ? false : 'needs /dev/full' }, async () => {
  const server = await spawnServe(model.dir, ['--step-timeline', '/dev/full']);
  spawned.push(server);
  await completeAll(server.url, 3);
  const deadline = Date.now() + 5000;
  while (!server.stderr().includes('the step timeline stopped') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.match(server.stderr(), /keel: the step timeline stopped: writing \/dev\/full failed \(ENOSPC[^)]*\); the engine serves on/);
  assert.equal((await completeAll(server.url, 3, {}, 50)).length, 3);
  server.child.kill('SIGTERM');
  assert.deepEqual(await exitWithin(server, 30_000), { code: 0, signal: null }, server.stderr());
  assert.equal(server.stderr().match(/the step timeline stopped/g)?.length, 1, 'said once');
});

test('keel serve refuses a --step-timeline file it cannot write, naming it, before serving', async () => {
  const blocked = join(dir, 'blocked');
  writeFileSync(blocked, '');
  await assert.rejects(spawnServe(model.dir, ['--step-timeline', join(blocked, 'steps.jsonl')]), /cannot write the step timeline to .*blocked\/steps\.jsonl/);
  await assert.rejects(spawnServe(model.dir, ['--step-timeline', '']), /--step-timeline needs a file name/);
});

test('POST /stop_profile and /start_profile pause and resume the recording, behind the API key; without --step-timeline they are not served', async () => {
  const file = join(dir, 'profile', 'steps.jsonl');
  const auth = { authorization: 'Bearer secret' };
  const tiny = await startTinyServer({ modelDir: model.dir, server: { stepTimeline: file, apiKey: 'secret' } });
  const plain = await startTinyServer({ modelDir: model.dir });
  try {
    const post = (url: string, path: string, headers: Record<string, string> = auth) => fetch(`${url}${path}`, { method: 'POST', headers });
    assert.equal((await post(tiny.url, '/stop_profile', {})).status, 401);
    assert.equal((await post(plain.url, '/start_profile', {})).status, 404);
    assert.equal((await post(plain.url, '/stop_profile', {})).status, 404);

    const first = await completeAll(tiny.url, 3, auth);
    // Written out while recording, every second: here before the recording stops.
    const deadline = Date.now() + 5000;
    while (readLines(file).length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(readLines(file).length > 0, 'lines are written while the recording goes on');
    const started = await post(tiny.url, '/start_profile');
    assert.equal(started.status, 400, 'one recording at a time');
    assert.match(((await started.json()) as { error: { message: string } }).error.message, /recording already/);
    const stopped = await post(tiny.url, '/stop_profile');
    assert.equal(stopped.status, 200);
    assert.equal(await stopped.text(), '');
    // Stopped: the file holds every step so far, and no more come.
    const recorded = readLines(file);
    checkSteps(recorded, null);
    checkCompositions(recorded, first);
    await completeAll(tiny.url, 2, auth);
    assert.deepEqual(readLines(file), recorded, 'nothing is recorded while stopped');
    assert.equal((await post(tiny.url, '/stop_profile')).status, 400, 'nothing to stop');
    // A file the engine cannot open refuses the start, and leaves nothing recording.
    await assert.rejects(tiny.engine.startStepTimeline(join(file, 'under-a-file.jsonl')), /cannot write the step timeline to .*under-a-file\.jsonl/);
    assert.equal((await post(tiny.url, '/stop_profile')).status, 400);

    assert.equal((await post(tiny.url, '/start_profile')).status, 200);
    const second = await completeAll(tiny.url, 2, auth);
    await tiny.close();
    const lines = readLines(file);
    assert.deepEqual(lines.slice(0, recorded.length), recorded, 'the new recording is appended');
    const resumed = lines.slice(recorded.length);
    checkSteps(resumed, null);
    checkCompositions(resumed, second);
  } finally {
    await Promise.all([tiny.close(), plain.close()]);
  }
});
