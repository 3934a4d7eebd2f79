import { rawBytes, rawRequest, type RawResult } from './soak-http.ts';
import type { SoakRandom } from './soak-random.ts';

/** What the clients need to know of the server they abuse. */
export interface SoakTarget {
  url: string;
  port: number;
  /** Token ids in [5, tokenIdLimit) are sent as prompts. */
  tokenIdLimit: number;
  idleTimeoutMs: number;
  bodyTimeoutMs: number;
  maxBodyBytes: number;
  maxPromptBytes: number;
  /** Whether SIGTERM has been sent: from then on refused connections and cut streams are expected. */
  shutdownStarted(): boolean;
}

/**
 * How one client request ended. Clean: `completed`, `client_aborted`, `client_disconnected`,
 * `http_<status>` (an error in OpenAI's shape), `stream_error_<code>`, `cut_stalled` (a client
 * that stopped reading longer than --idle-timeout), and after SIGTERM `refused_after_shutdown` and
 * `cut_by_shutdown`. Anything else is `violation:<what>`.
 */
export type Outcome = string;

export interface ClientAction {
  name: string;
  weight: number;
  run(target: SoakTarget, random: SoakRandom): Promise<Outcome>;
}

/** No action may take longer: one that does is a hang. */
const DEADLINE_MS = 120_000;

const TEXTS = [
  'def fibonacci(n):',
  'import os\n\nfor path in os.listdir("."):',
  'class Stack:\n    def __init__(self):',
  'Write a function that reverses a string.',
  'SELECT name FROM users WHERE',
  'é😀 unicode ✓ text',
];

const tokenIds = (random: SoakRandom, limit: number, length: number) => Array.from({ length }, () => random.int(5, limit - 1));

function isOpenAiError(body: unknown): body is { error: { message: string; type: string; param: unknown; code: unknown } } {
  const error = (body as { error?: Record<string, unknown> } | null)?.error;
  return typeof error === 'object' && error !== null && typeof error.message === 'string' && typeof error.type === 'string' && 'param' in error && 'code' in error;
}

/** An answer that is not a 200: a clean error in OpenAI's shape, or a violation. */
function errorOutcome(target: SoakTarget, status: number, text: string): Outcome {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return `violation:${status} not JSON`;
  }
  if (!isOpenAiError(body)) return `violation:${status} not OpenAI's error shape`;
  if (status === 500) return `violation:500 ${body.error.message}`;
  if (status === 503 && !target.shutdownStarted()) return `violation:503 before shutdown (${String(body.error.code)})`;
  return `http_${status}`;
}

function connectionOutcome(target: SoakTarget, error: string): Outcome {
  return target.shutdownStarted() ? 'refused_after_shutdown' : `violation:connection ${error}`;
}

/** A server-sent-events body: every event JSON, [DONE] last, each choice finished or an error event. */
function streamOutcome(target: SoakTarget, text: string): Outcome {
  if (!text.endsWith('data: [DONE]\n\n')) return target.shutdownStarted() ? 'cut_by_shutdown' : 'violation:stream ended without [DONE]';
  const events = text.split('\n\n').filter((e) => e.startsWith('data: {'));
  let finished = 0;
  for (const event of events) {
    let data: { error?: { code?: string }; choices?: { finish_reason?: string | null }[] };
    try {
      data = JSON.parse(event.slice('data: '.length));
    } catch {
      return 'violation:stream event not JSON';
    }
    if (data.error) {
      const code = String(data.error.code);
      return code === 'shutting_down' && !target.shutdownStarted() ? 'violation:shutting_down event before shutdown' : `stream_error_${code}`;
    }
    for (const choice of data.choices ?? []) if (choice.finish_reason === 'stop' || choice.finish_reason === 'length') finished++;
  }
  return finished > 0 ? 'completed' : 'violation:stream without a finish_reason';
}

async function post(target: SoakTarget, path: string, body: unknown, signal?: AbortSignal): Promise<{ status: number; text: string } | { error: string }> {
  try {
    const response = await fetch(`${target.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
      signal: signal ?? AbortSignal.timeout(DEADLINE_MS),
    });
    return { status: response.status, text: await response.text() };
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code;
    return { error: (error as Error).name === 'AbortError' ? 'AbortError' : (cause ?? (error as Error).message) };
  }
}

function jsonOutcome(target: SoakTarget, answer: { status: number; text: string } | { error: string }, check: (body: Record<string, unknown>) => boolean): Outcome {
  if ('error' in answer) return answer.error === 'TimeoutError' ? 'violation:hung' : connectionOutcome(target, answer.error);
  if (answer.status !== 200) return errorOutcome(target, answer.status, answer.text);
  try {
    return check(JSON.parse(answer.text) as Record<string, unknown>) ? 'completed' : 'violation:unexpected 200 body';
  } catch {
    return 'violation:200 not JSON';
  }
}

const finishedChoices = (body: Record<string, unknown>) =>
  Array.isArray(body.choices) && body.choices.length > 0 && body.choices.every((c: { finish_reason?: string }) => c.finish_reason === 'stop' || c.finish_reason === 'length');

function rawOutcome(target: SoakTarget, result: RawResult, stream: boolean): Outcome {
  if (result.status === null) return result.error === 'deadline' ? 'violation:hung' : connectionOutcome(target, result.error ?? 'no answer');
  if (result.status !== 200) return errorOutcome(target, result.status, result.text);
  if (result.error === 'deadline') return 'violation:hung';
  return stream ? streamOutcome(target, result.text) : 'completed';
}

/** A request the server must refuse: a 200 is a violation. */
function refusal(target: SoakTarget, result: RawResult): Outcome {
  return result.status === 200 ? 'violation:accepted a request it must refuse' : rawOutcome(target, result, false);
}

export const CLIENT_ACTIONS: ClientAction[] = [
  {
    name: 'completion',
    weight: 15,
    run: async (t, r) => {
      const prompt = r.next() < 0.5 ? tokenIds(r, t.tokenIdLimit, r.int(2, 48)) : r.pick(TEXTS);
      return jsonOutcome(t, await post(t, '/v1/completions', { prompt, max_tokens: r.int(1, 24), temperature: r.pick([0, 0.8]) }), finishedChoices);
    },
  },
  {
    name: 'chat stream',
    weight: 20,
    run: async (t, r) => {
      const answer = await post(t, '/v1/chat/completions', { messages: [{ role: 'user', content: r.pick(TEXTS) }], max_tokens: r.int(1, 32), stream: true, stream_options: { include_usage: true } });
      if ('error' in answer) return answer.error === 'TimeoutError' ? 'violation:hung' : connectionOutcome(t, answer.error);
      return answer.status === 200 ? streamOutcome(t, answer.text) : errorOutcome(t, answer.status, answer.text);
    },
  },
  {
    name: 'stream, n = 2 with logprobs',
    weight: 10,
    run: async (t, r) => {
      const answer = await post(t, '/v1/completions', { prompt: tokenIds(r, t.tokenIdLimit, r.int(2, 24)), n: 2, logprobs: 5, max_tokens: r.int(1, 16), stream: true });
      if ('error' in answer) return answer.error === 'TimeoutError' ? 'violation:hung' : connectionOutcome(t, answer.error);
      return answer.status === 200 ? streamOutcome(t, answer.text) : errorOutcome(t, answer.status, answer.text);
    },
  },
  {
    name: 'aborted stream',
    weight: 12,
    run: async (t, r) => {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), r.int(0, 400));
      const answer = await post(t, '/v1/completions', { prompt: tokenIds(r, t.tokenIdLimit, r.int(2, 24)), max_tokens: r.int(8, 64), ignore_eos: true, stream: true }, controller.signal);
      clearTimeout(timer);
      if ('error' in answer) return answer.error === 'AbortError' ? 'client_aborted' : connectionOutcome(t, answer.error);
      return answer.status === 200 ? streamOutcome(t, answer.text) : errorOutcome(t, answer.status, answer.text);
    },
  },
  {
    name: 'disconnect mid-stream',
    weight: 8,
    run: async (t, r) => {
      let disconnected = false;
      const result = await rawRequest(
        t.url,
        { path: '/v1/chat/completions', body: JSON.stringify({ messages: [{ role: 'user', content: r.pick(TEXTS) }], max_tokens: 48, ignore_eos: true, stream: true }), deadlineMs: DEADLINE_MS },
        (response, destroy) => {
          if (response.statusCode !== 200) return;
          response.once('data', () => {
            disconnected = true;
            destroy();
          });
        },
      );
      return disconnected ? 'client_disconnected' : rawOutcome(t, result, true);
    },
  },
  {
    name: 'paused reader',
    weight: 5,
    run: async (t, r) => {
      const pauseMs = r.int(500, t.idleTimeoutMs + 3000);
      const result = await rawRequest(
        t.url,
        { path: '/v1/completions', body: JSON.stringify({ prompt: tokenIds(r, t.tokenIdLimit, 4), logprobs: 20, max_tokens: r.int(64, 400), ignore_eos: true, stream: true }), deadlineMs: DEADLINE_MS },
        (response) => {
          if (response.statusCode !== 200) return;
          response.once('data', () => {
            response.pause();
            setTimeout(() => response.resume(), pauseMs);
          });
        },
      );
      if (result.status === 200 && result.error === 'closed before the end') {
        if (pauseMs >= t.idleTimeoutMs) return 'cut_stalled';
        if (t.shutdownStarted()) return 'cut_by_shutdown';
      }
      return rawOutcome(t, result, true);
    },
  },
  {
    name: 'slow body',
    weight: 5,
    run: async (t, r) => {
      // Half of them finish well inside --body-timeout, half would take twice as long.
      const totalMs = r.next() < 0.5 ? t.bodyTimeoutMs / 2 : t.bodyTimeoutMs * 2;
      const body = JSON.stringify({ prompt: tokenIds(r, t.tokenIdLimit, 4), max_tokens: 2 }).padEnd(200, ' ');
      const head = `POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:${t.port}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
      const pieces = Array.from({ length: 10 }, (_, i) => body.slice(i * 20, (i + 1) * 20));
      return rawOutcome(t, await rawBytes(t.port, [head, ...pieces], totalMs / 10, DEADLINE_MS), false);
    },
  },
  {
    name: 'oversize body',
    weight: 3,
    run: async (t) => refusal(t, await rawRequest(t.url, { path: '/v1/completions', body: Buffer.alloc(t.maxBodyBytes + 1024, 0x20), deadlineMs: DEADLINE_MS })),
  },
  {
    name: 'oversize prompt',
    weight: 5,
    run: async (t) => jsonOutcome(t, await post(t, '/v1/completions', { prompt: 'x'.repeat(t.maxPromptBytes + 100), max_tokens: 1 }), () => false),
  },
  {
    name: 'too many sequences',
    weight: 4,
    run: async (t) => jsonOutcome(t, await post(t, '/v1/completions', { prompt: Array.from({ length: 64 }, () => [1, 2, 3]), n: 128, max_tokens: 1 }), () => false),
  },
  {
    name: 'malformed',
    weight: 8,
    run: async (t, r) => {
      const kind = r.int(0, 8);
      if (kind === 6) return refusal(t, await rawBytes(t.port, ['GARBAGE / HTTP/9.9\r\n\r\n'], 10, DEADLINE_MS));
      if (kind === 7) return refusal(t, await rawBytes(t.port, [`GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`], 10, DEADLINE_MS));
      if (kind === 8) {
        return refusal(t, await rawRequest(t.url, { path: '/v1/completions', headers: { host: `attacker.example:${t.port}` }, body: '{"prompt": [1], "max_tokens": 1}', deadlineMs: DEADLINE_MS }));
      }
      const bodies: (string | Buffer)[] = [
        '{"prompt": [1, 2',
        '{"prompt": "a\\ud800b", "max_tokens": 1}',
        Buffer.concat([Buffer.from('{"prompt": "he'), Buffer.from([0xff, 0xfe]), Buffer.from('llo"}')]),
        '{"prompt": 5}',
        '{"prompt": [1], "max_tokens": 1, "temprature": 0.5}',
        '{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text", "strict": true}}',
      ];
      const path = kind === 5 ? '/v1/chat/completions' : '/v1/completions';
      return refusal(t, await rawRequest(t.url, { path, body: bodies[kind], deadlineMs: DEADLINE_MS }));
    },
  },
  {
    name: 'tokenize',
    weight: 5,
    run: async (t, r) => jsonOutcome(t, await post(t, '/tokenize', { prompt: r.pick(TEXTS).repeat(r.int(1, 50)) }), (body) => Array.isArray(body.tokens)),
  },
];
