import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { TestRandom, testSeed } from '../helpers/cpu-random.ts';
import { metricValue, startTinyServer, waitForIdleEngine, type TinyServer } from './tiny-server.ts';

// A bounded load test over loopback: many concurrent requests, a fifth of them aborted by their
// client, against a KV pool so small that the scheduler must preempt. Every request must complete
// or fail cleanly, every block must come back, and the heap must not grow from round to round.

const REQUESTS_PER_ROUND = 1000;
const ROUNDS = 3;
const CONCURRENCY = 64;
const ABORT_FRACTION = 0.2;
const POOL_BLOCKS = 24;
const BLOCK_SIZE = 4;
/** Tiny-model vocabulary ids a prompt may use. */
const VOCAB = 288;

let server: TinyServer;

before(async () => {
  server = await startTinyServer({
    engine: { numKvBlocks: POOL_BLOCKS, blockSize: BLOCK_SIZE, maxModelLen: 48, maxNumSeqs: 32 },
    server: { maxQueuedSequences: null, maxQueuedTokens: null, logLevel: 'warn' },
  });
});
after(() => server.close());

type Outcome = 'completed' | 'aborted' | 'error';

/** One request of the load: a random token-id prompt, streamed or not, maybe aborted mid-way. */
async function oneRequest(random: TestRandom): Promise<Outcome> {
  const maxTokens = random.int(1, 8);
  const stream = random.uniform(0, 1) < 0.5;
  const body = {
    prompt: Array.from({ length: random.int(2, 24) }, () => random.int(0, VOCAB - 1)),
    max_tokens: maxTokens,
    temperature: random.pick([0, 1]),
    ignore_eos: random.pick([true, false]),
    stream,
  };
  const controller = new AbortController();
  const abortAfterMs = random.uniform(0, 1) < ABORT_FRACTION ? random.int(0, 15) : null;
  const timer = abortAfterMs === null ? null : setTimeout(() => controller.abort(), abortAfterMs);
  try {
    const response = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    const text = await response.text();
    if (response.status !== 200) {
      const error = JSON.parse(text) as { error: { message: string } };
      assert.equal(typeof error.error.message, 'string', text);
      return 'error';
    }
    if (stream) {
      assert.ok(text.endsWith('data: [DONE]\n\n'), text);
      assert.match(text, /"finish_reason":"(stop|length)"/);
    } else {
      const completion = JSON.parse(text) as { choices: { finish_reason: string }[]; usage: { completion_tokens: number } };
      assert.ok(['stop', 'length'].includes(completion.choices[0].finish_reason), text);
      assert.ok(completion.usage.completion_tokens <= maxTokens, text);
    }
    return 'completed';
  } catch (error) {
    if (controller.signal.aborted && (error as Error).name === 'AbortError') return 'aborted';
    throw error;
  } finally {
    if (timer) clearTimeout(timer);
  }
}

async function round(random: TestRandom): Promise<Record<Outcome, number>> {
  const counts: Record<Outcome, number> = { completed: 0, aborted: 0, error: 0 };
  let next = 0;
  const worker = async () => {
    while (next < REQUESTS_PER_ROUND) {
      next++;
      counts[await oneRequest(random)]++;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return counts;
}

/** Heap after a full collection when this process can collect on demand, else the resident set. */
function memoryAfterGc(): { kind: 'heapUsed' | 'rss'; bytes: number } {
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    gc();
    gc();
    return { kind: 'heapUsed', bytes: process.memoryUsage().heapUsed };
  } catch {
    return { kind: 'rss', bytes: process.memoryUsage().rss };
  }
}

test(`${ROUNDS} rounds of ${REQUESTS_PER_ROUND} requests at concurrency ${CONCURRENCY} with client aborts and preemption`, async () => {
  const random = new TestRandom(testSeed('server load'));
  const memory: number[] = [];
  let kind = 'heapUsed';
  for (let r = 0; r < ROUNDS; r++) {
    const started = performance.now();
    const counts = await round(random);
    assert.equal(counts.completed + counts.aborted + counts.error, REQUESTS_PER_ROUND);
    assert.ok(counts.completed > REQUESTS_PER_ROUND / 2, JSON.stringify(counts));
    assert.ok(counts.aborted > 0, JSON.stringify(counts));
    const idle = await waitForIdleEngine(server.url);
    assert.deepEqual(
      { running: idle.running, waiting: idle.waiting, inFlight: idle.in_flight_requests, free: idle.kv_cache.free_blocks },
      { running: 0, waiting: 0, inFlight: 0, free: POOL_BLOCKS },
    );
    const measured = memoryAfterGc();
    kind = measured.kind;
    memory.push(measured.bytes);
    console.log(`round ${r + 1}: ${JSON.stringify(counts)} in ${Math.round(performance.now() - started)} ms, ${measured.kind} ${(measured.bytes / 2 ** 20).toFixed(1)} MiB`);
  }
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.ok((metricValue(metrics, 'keel_num_preemptions_total') ?? 0) > 0, 'the small KV pool forced preemptions');
  // Round 1 warms caches and JIT; later rounds must not keep what their requests allocated.
  const growth = memory[ROUNDS - 1] - memory[0];
  const bound = kind === 'heapUsed' ? 8 * 2 ** 20 : 64 * 2 ** 20;
  assert.ok(growth < bound, `${kind} grew by ${(growth / 2 ** 20).toFixed(1)} MiB from round 1 to round ${ROUNDS}`);
});
