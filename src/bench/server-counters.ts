import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerMetricsResults } from './result-schema.ts';
import { speculationFigures, type SpeculationTotals } from './speculation-figures.ts';

/** A Keel server's running totals since it started, from its Prometheus /metrics (src/server/metrics.ts). */
export interface ServerCounters {
  /** Sequences running or waiting at the reading. */
  busySequences: number;
  /** keel_prompt_tokens_total, and those the prefix cache served by tier (keel_prefix_cache_hit_tokens_total). */
  promptTokens: number;
  deviceHitTokens: number;
  hostHitTokens: number;
  /** keel_num_preemptions_total, and of those keel_num_swaps_total. */
  preemptions: number;
  swaps: number;
  /** keel_spec_decode_*; null when the server does not speculate. */
  speculation: SpeculationTotals | null;
}

/** How long a reading waits for the server to settle, and how often it asks meanwhile. */
const SETTLE_TIMEOUT_MS = 2000;
const SETTLE_POLL_MS = 20;

/**
 * A Keel server's counters, read from its /metrics; null when it has none (another engine, or no
 * server at that address). The engine reports a step's totals after the step's tokens went out,
 * so a client that has seen its last token may read the totals before that step's: the reading is
 * the first that shows nothing running or waiting, or the last one after SETTLE_TIMEOUT_MS (a
 * server busy with other clients never settles, and their work counts too).
 */
export async function scrapeServerCounters(baseUrl: string, apiKey: string | null): Promise<ServerCounters | null> {
  const deadline = performance.now() + SETTLE_TIMEOUT_MS;
  for (;;) {
    const text = await metricsText(baseUrl, apiKey);
    const counters = text === null ? null : parseServerCounters(text);
    if (counters === null || counters.busySequences === 0 || performance.now() >= deadline) return counters;
    await sleep(SETTLE_POLL_MS);
  }
}

async function metricsText(baseUrl: string, apiKey: string | null): Promise<string | null> {
  try {
    const response = await fetch(`${baseUrl}/metrics`, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {} });
    return response.ok ? await response.text() : null;
  } catch {
    return null;
  }
}

/** The counters in a Keel server's Prometheus text; null when it lacks any of them (not a Keel server). */
export function parseServerCounters(text: string): ServerCounters | null {
  const sample = (name: string, labels?: Record<string, string>) => metricSample(text, name, labels);
  const read = allPresent({
    running: sample('keel_num_requests_running'),
    waiting: sample('keel_num_requests_waiting'),
    promptTokens: sample('keel_prompt_tokens_total'),
    deviceHitTokens: sample('keel_prefix_cache_hit_tokens_total', { tier: 'device' }),
    hostHitTokens: sample('keel_prefix_cache_hit_tokens_total', { tier: 'host' }),
    preemptions: sample('keel_num_preemptions_total'),
    swaps: sample('keel_num_swaps_total'),
  });
  if (read === null) return null;
  const { running, waiting, ...totals } = read;
  return { busySequences: running + waiting, ...totals, speculation: speculationTotals(text) };
}

/** The server exports keel_spec_decode_* only when it speculates. */
function speculationTotals(text: string): SpeculationTotals | null {
  const totals = allPresent({
    numSteps: metricSample(text, 'keel_spec_decode_num_drafts_total'),
    numDraftTokens: metricSample(text, 'keel_spec_decode_num_draft_tokens_total'),
    numAcceptedTokens: metricSample(text, 'keel_spec_decode_num_accepted_tokens_total'),
  });
  if (totals === null) return null;
  const drafted = samplesByPosition(text, 'keel_spec_decode_num_draft_tokens_per_pos_total');
  const accepted = samplesByPosition(text, 'keel_spec_decode_num_accepted_tokens_per_pos_total');
  // A position appears once a draft was verified there; pad both to the same length.
  const positions = Math.max(drafted.length, accepted.length);
  const padded = (values: number[]) => Array.from({ length: positions }, (_, i) => values[i] ?? 0);
  return { ...totals, draftTokensByPosition: padded(drafted), acceptedTokensByPosition: padded(accepted) };
}

/**
 * What the server did between two readings of its counters: the run's prefix-cache hit rates,
 * preemptions and speculative decoding. Null without both readings, or when the server restarted
 * in between (its totals went back).
 */
export function serverMetricsOverRun(before: ServerCounters | null, after: ServerCounters | null): ServerMetricsResults | null {
  if (before === null || after === null || after.promptTokens < before.promptTokens) return null;
  const promptTokens = after.promptTokens - before.promptTokens;
  const hitRate = (hits: number) => (promptTokens === 0 ? 0 : hits / promptTokens);
  return {
    prompt_tokens: promptTokens,
    prefix_cache_hit_rate: { device: hitRate(after.deviceHitTokens - before.deviceHitTokens), host: hitRate(after.hostHitTokens - before.hostHitTokens) },
    preemptions: after.preemptions - before.preemptions,
    swaps: after.swaps - before.swaps,
    speculation: speculationFigures(before.speculation, after.speculation),
  };
}

/** `values` when none is null; null otherwise. */
function allPresent<T extends Record<string, number | null>>(values: T): { [K in keyof T]: number } | null {
  return Object.values(values).every((v) => v !== null) ? (values as { [K in keyof T]: number }) : null;
}

/** The value of the first sample of `name` that carries `labels` in Prometheus text; null when there is none. */
export function metricSample(text: string, name: string, labels: Record<string, string> = {}): number | null {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    return sampleValue(line);
  }
  return null;
}

/** [i]: the sample of `name` labelled position="i" (0 where there is none). */
function samplesByPosition(text: string, name: string): number[] {
  const values: number[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const position = /[{,]position="(\d+)"/.exec(line);
    if (position !== null) values[Number(position[1])] = sampleValue(line);
  }
  return Array.from(values, (v) => v ?? 0);
}

/** A sample line's value: its last field (Keel's server writes no timestamps). */
const sampleValue = (line: string) => Number(line.slice(line.lastIndexOf(' ') + 1));
