// A chaos soak of `keel serve` (issue #23): a thousand concurrent clients mixing normal, aborted,
// disconnected and paused streams, slow bodies, oversize and malformed requests, against a tiny KV
// pool. Phase 1 runs the mix, then checks the engine comes back idle with every KV block free;
// phase 2 runs it again and sends SIGTERM halfway. Figures on stdout and in --output (JSON); the
// exit code is 0 only if every check passed. Run it with `node --import tsx scripts/chaos-soak.ts`
// (on Node >= 22.18, `node scripts/chaos-soak.ts`); --help lists the options.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startHealthProbe, type HealthSample } from './chaos-soak/health-probe.ts';
import { CLIENT_ACTIONS, type SoakTarget } from './chaos-soak/soak-clients.ts';
import { healthFigures, latencyFigures, round, tally } from './chaos-soak/soak-figures.ts';
import { SoakRandom } from './chaos-soak/soak-random.ts';
import { launchServer, residentMiB, waitForIdle, type LoopDelay } from './chaos-soak/soak-server.ts';

const HELP = `Usage: node --import tsx scripts/chaos-soak.ts [options] [-- keel serve flags...]

Launches keel serve and drives it with concurrent clients mixing ${CLIENT_ACTIONS.map((a) => a.name).join(', ')}.
Phase 1 lasts --phase-seconds, then the engine must come back idle with every KV block free;
phase 2 runs the same mix and sends SIGTERM halfway, timing the shutdown. Checks: every request
completes or gets a clean error, the KV pool is full again after phase 1, RSS stays flat, /health
p99 under 100 ms and max under 1 s, the shutdown ends within --shutdown-timeout + 5 s.

  --clients N             concurrent clients (default 1000)
  --phase-seconds S       length of each phase (default 60)
  --backend B             cpu | cuda | auto (default cpu)
  --model DIR             model directory (default: the embedded keel-tiny)
  --num-kv-blocks N       the KV pool, kept tiny so that the scheduler preempts (default 128)
  --max-queued-sequences N  keel serve's queue, sized to what the pool serves within the clients'
                          120 s deadline (default 64: a 128-block pool holds about ten sequences)
  --shutdown-timeout S    keel serve's drain timeout (default 10)
  --idle-timeout S        keel serve's idle timeout; paused readers pause up to 3 s past it (default 5)
  --body-timeout S        keel serve's body timeout; half the slow bodies outlast it (default 5)
  --seed N                seed of the clients' choices (default 1)
  --output FILE           where to write the figures as JSON (default: stdout only)
  --synthetic-tokens-per-s N  SYNTHETIC: serve with a stand-in engine that runs no model and makes up
                          N tokens a second (scripts/chaos-soak/synthetic-engine.ts), to put a GPU's
                          streaming load on the server's event loop without a GPU; the figures then
                          say nothing of the engine, only of the server
  --cpu-prof DIR          write CPU profiles of the server (node --cpu-prof: its main thread among them) into DIR

Besides /health, the server's own event-loop delay is measured inside it (perf_hooks), from the
start of phase 1 to SIGTERM: it does not depend on how promptly the soak's clients are scheduled.`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    clients: { type: 'string' },
    'phase-seconds': { type: 'string' },
    backend: { type: 'string' },
    model: { type: 'string' },
    'num-kv-blocks': { type: 'string' },
    'max-queued-sequences': { type: 'string' },
    'shutdown-timeout': { type: 'string' },
    'idle-timeout': { type: 'string' },
    'body-timeout': { type: 'string' },
    seed: { type: 'string' },
    output: { type: 'string' },
    'synthetic-tokens-per-s': { type: 'string' },
    'cpu-prof': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  console.log(HELP);
  process.exit(0);
}
const clients = Number(values.clients ?? 1000);
const phaseMs = Number(values['phase-seconds'] ?? 60) * 1000;
const backend = values.backend ?? 'cpu';
const shutdownTimeoutS = Number(values['shutdown-timeout'] ?? 10);
const idleTimeoutS = Number(values['idle-timeout'] ?? 5);
const bodyTimeoutS = Number(values['body-timeout'] ?? 5);
const seed = Number(values.seed ?? 1);
const syntheticTokensPerS = values['synthetic-tokens-per-s'] === undefined ? null : Number(values['synthetic-tokens-per-s']);
if (syntheticTokensPerS !== null && !(syntheticTokensPerS > 0)) throw new Error(`--synthetic-tokens-per-s must be a positive number (got ${values['synthetic-tokens-per-s']})`);
/** Small, so that oversize bodies cost the soak little traffic. */
const MAX_BODY_BYTES = 1024 * 1024;

const serveArgs = [
  '--backend', backend,
  '--num-kv-blocks', values['num-kv-blocks'] ?? '128',
  '--max-queued-sequences', values['max-queued-sequences'] ?? '64',
  '--shutdown-timeout', String(shutdownTimeoutS),
  '--idle-timeout', String(idleTimeoutS),
  '--body-timeout', String(bodyTimeoutS),
  '--header-timeout', String(Math.min(5, bodyTimeoutS)),
  '--max-body-bytes', String(MAX_BODY_BYTES),
  '--log-level', 'error',
  ...(values.model ? ['--model', values.model] : []),
  ...positionals,
];

const engineNote = syntheticTokensPerS === null ? '' : ` with the SYNTHETIC engine at ${syntheticTokensPerS} tokens/s`;
console.error(`chaos soak: ${clients} clients, two phases of ${phaseMs / 1000} s, keel serve ${serveArgs.join(' ')}${engineNote}`);
const server = await launchServer(serveArgs, { syntheticTokensPerS, cpuProfDir: values['cpu-prof'] ?? null });
const pid = server.child.pid as number;
const started = performance.now();
const since = () => round((performance.now() - started) / 1000);

const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { max_model_len: number }[] };
const maxModelLen = models.data[0].max_model_len;
let shutdownAt: number | null = null;
const target: SoakTarget = {
  url: server.url,
  port: Number(new URL(server.url).port),
  // Token ids below 256 exist in every vocabulary Keel serves (byte-level or byte-fallback).
  tokenIdLimit: 256,
  idleTimeoutMs: idleTimeoutS * 1000,
  bodyTimeoutMs: bodyTimeoutS * 1000,
  maxBodyBytes: MAX_BODY_BYTES,
  maxPromptBytes: 32 * maxModelLen,
  shutdownStarted: () => shutdownAt !== null,
};

const rss: { t: number; mib: number }[] = [];
const rssTimer = setInterval(() => {
  const mib = residentMiB(pid);
  if (mib !== null) rss.push({ t: since(), mib: round(mib) });
}, 1000);
const probe = startHealthProbe(server.url, 100);
/** The engine's state every 5 s: how deep the queue runs, and how fast tokens come. */
const timeline: Record<string, number>[] = [];
const timelineTimer = setInterval(() => {
  fetch(`${server.url}/v1/engine/stats`)
    .then(async (r) => {
      const s = (await r.json()) as { running: number; waiting: number; in_flight_requests: number; kv_cache: { free_blocks: number }; preemptions_total: number; generation_tokens_per_second: number };
      timeline.push({ t: since(), running: s.running, waiting: s.waiting, in_flight: s.in_flight_requests, free_blocks: s.kv_cache.free_blocks, preemptions: s.preemptions_total, tokens_per_s: round(s.generation_tokens_per_second) });
    })
    .catch(() => undefined);
}, 5000);

/** Tokens the engine has generated since it started; null if the server did not answer. */
async function generationTokensTotal(): Promise<number | null> {
  try {
    return ((await (await fetch(`${server.url}/v1/engine/stats`)).json()) as { generation_tokens_total: number }).generation_tokens_total;
  } catch {
    return null;
  }
}

interface PhaseResult {
  outcomes: Map<string, number>;
  /** How long each completed request took, in ms. */
  completedMs: number[];
  byAction: Map<string, Map<string, number>>;
  examples: string[];
}

/** Runs every client until `until()` says stop; each waits 0–1 s between its requests (1 s after a 429). */
async function runPhase(random: SoakRandom, until: () => boolean): Promise<PhaseResult> {
  const result: PhaseResult = { outcomes: new Map(), completedMs: [], byAction: new Map(), examples: [] };
  const client = async (id: number) => {
    const own = new SoakRandom(random.int(0, 2 ** 31) + id);
    while (!until()) {
      const action = own.weighted(CLIENT_ACTIONS);
      let outcome: string;
      const begun = performance.now();
      try {
        outcome = await action.run(target, own);
      } catch (error) {
        outcome = `violation:the client threw ${(error as Error).message}`;
      }
      if (outcome === 'completed') result.completedMs.push(performance.now() - begun);
      result.outcomes.set(outcome, (result.outcomes.get(outcome) ?? 0) + 1);
      const perAction = result.byAction.get(action.name) ?? new Map<string, number>();
      perAction.set(outcome, (perAction.get(outcome) ?? 0) + 1);
      result.byAction.set(action.name, perAction);
      if (outcome.startsWith('violation') && result.examples.length < 20) result.examples.push(`${since()} s ${action.name}: ${outcome}`);
      // The server has stopped listening: nothing more to learn from this client.
      if (outcome === 'refused_after_shutdown') return;
      await new Promise((resolve) => setTimeout(resolve, outcome === 'http_429' ? 1000 : own.int(0, 1000)));
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, id) => client(id)));
  return result;
}

const random = new SoakRandom(seed);
await server.loopDelay(true);
const tokensAtStart = { at: performance.now(), total: await generationTokensTotal() };
const phase1End = performance.now() + phaseMs;
const phase1 = await runPhase(random, () => performance.now() > phase1End);
const idle = await waitForIdle(server.url, 60_000);
const rssAfterPhase1 = residentMiB(pid);
console.error(`phase 1 done at ${since()} s: ${JSON.stringify(tally(phase1.outcomes))}; idle ${idle.idle} after ${round(idle.waitedMs)} ms`);

const phase2Start = performance.now();
let loopDelay: LoopDelay | null = null;
let streamedTokensPerS: number | null = null;
const signalTimer = setTimeout(async () => {
  loopDelay = await server.loopDelay(false);
  const total = await generationTokensTotal();
  streamedTokensPerS = total === null || tokensAtStart.total === null ? null : round(((total - tokensAtStart.total) * 1000) / (performance.now() - tokensAtStart.at), 0);
  shutdownAt = performance.now();
  server.child.kill('SIGTERM');
  console.error(`SIGTERM at ${since()} s`);
}, phaseMs / 2);
let serverExited = false;
const exit = server.exited.then((e) => {
  serverExited = true;
  return e;
});
const phase2 = await runPhase(random, () => serverExited || performance.now() > phase2Start + phaseMs * 2);
clearTimeout(signalTimer);
const exited = await exit;
clearInterval(rssTimer);
clearInterval(timelineTimer);
const samples = await probe.stop();
const epoch = (t: number) => performance.timeOrigin + t;
const beforeSignal = (s: HealthSample) => shutdownAt === null || s.at + s.ms < epoch(shutdownAt);

const warm = rss.filter((s) => s.t >= phaseMs / 4000 && s.t <= phaseMs / 2000);
const rssWarmMiB = warm.length > 0 ? warm.reduce((sum, s) => sum + s.mib, 0) / warm.length : null;
const shutdownMs = shutdownAt === null ? null : exited.at - shutdownAt;
const health = healthFigures(samples.filter(beforeSignal), epoch(started));
const totals = { phase1: tally(phase1.outcomes), phase2: tally(phase2.outcomes) };
const checks = {
  every_request_completed_or_clean_error: totals.phase1.violations + totals.phase2.violations === 0,
  kv_pool_full_after_phase_1: idle.idle && idle.state?.kv_cache.free_blocks === idle.state?.kv_cache.total_blocks,
  rss_flat: rssWarmMiB !== null && rssAfterPhase1 !== null && rssAfterPhase1 <= rssWarmMiB * 1.25,
  health_p99_under_100_ms: health.p99_ms < 100,
  health_max_under_1_s: health.max_ms < 1000,
  health_always_answered: health.failed.length === 0,
  shutdown_within_timeout: shutdownMs !== null && shutdownMs <= (shutdownTimeoutS + 5) * 1000,
};
const figures = {
  config: { clients, phase_seconds: phaseMs / 1000, backend, synthetic_tokens_per_s: syntheticTokensPerS, serve_args: serveArgs, seed, max_model_len: maxModelLen, node: process.version },
  requests: totals,
  completed_latency: { phase1: latencyFigures(phase1.completedMs), phase2: latencyFigures(phase2.completedMs) },
  engine_timeline: timeline,
  requests_by_action: Object.fromEntries([...new Set([...phase1.byAction.keys(), ...phase2.byAction.keys()])].map((name) => [name, Object.fromEntries([...(phase1.byAction.get(name) ?? []), ...(phase2.byAction.get(name) ?? [])].reduce((m, [k, n]) => m.set(k, (m.get(k) ?? 0) + n), new Map<string, number>()))])),
  violation_examples: [...phase1.examples, ...phase2.examples],
  health_until_sigterm: health,
  event_loop_delay_until_sigterm: loopDelay,
  generation_tokens_per_s_until_sigterm: streamedTokensPerS,
  kv_after_phase_1: { idle: idle.idle, free_blocks: idle.state?.kv_cache.free_blocks ?? null, total_blocks: idle.state?.kv_cache.total_blocks ?? null, waited_ms: round(idle.waitedMs) },
  rss_mib: { warm_average: rssWarmMiB === null ? null : round(rssWarmMiB), after_phase_1: rssAfterPhase1 === null ? null : round(rssAfterPhase1), max: Math.max(...rss.map((s) => s.mib)), samples: rss },
  shutdown: { sigterm_at_s: shutdownAt === null ? null : round((shutdownAt - started) / 1000), duration_ms: shutdownMs === null ? null : round(shutdownMs), exit_code: exited.code, signal: exited.signal, timeout_s: shutdownTimeoutS },
  checks,
  passed: Object.values(checks).every(Boolean),
};
const json = JSON.stringify(figures, null, 2);
if (values.output) writeFileSync(values.output, `${json}\n`);
console.log(JSON.stringify({ ...figures, rss_mib: { ...figures.rss_mib, samples: `${rss.length} samples` } }, null, 2));
if (!figures.passed) console.error(`server stderr (tail):\n${server.stderr().slice(-4000)}`);
process.exit(figures.passed ? 0 : 1);
