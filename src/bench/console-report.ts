import type { LatencyBatch, MultiTurnResults, ServeResults, ServerMetricsResults, SpeculationFigures, StepTimelineSummary, ThroughputResults, VerifyResults } from './result-schema.ts';

const ms = (v: number | null) => (v === null ? 'n/a' : `${v.toFixed(2)} ms`);
const rate = (v: number | null, unit: string) => (v === null ? 'n/a' : `${v.toFixed(2)} ${unit}`);

/** One line per batch size, printed as each finishes. */
export function latencyLine(row: LatencyBatch): string {
  const roofline = row.roofline?.fraction == null ? '' : `, ${(row.roofline.fraction * 100).toFixed(1)}% of the memory roofline`;
  return (
    `batch ${row.batch_size}: TTFT ${ms(row.mean_ttft_ms)}, TPOT ${ms(row.mean_tpot_ms)}, e2e ${ms(row.mean_e2el_ms)} ` +
    `(p99 ${ms(row.p99_e2el_ms)}), ${rate(row.output_tokens_per_s, 'output tok/s')}${roofline}` +
    (row.offload?.fraction == null ? '' : `, ${(row.offload.fraction * 100).toFixed(1)}% of the host-to-device copy bound`) +
    (row.preemptions ? `, ${row.preemptions} preemptions${row.swaps ? ` (${row.swaps} swapped)` : ''}` : '') +
    (row.speculation ? `, ${speculationText(row.speculation)}` : '') +
    (row.speedup_vs_baseline == null ? '' : `, ${row.speedup_vs_baseline.toFixed(2)}x the baseline's TPOT`)
  );
}

/** Speculative decoding's figures in a few words. */
function speculationText(s: SpeculationFigures): string {
  const figure = (v: number | null, digits: number) => (v === null ? 'n/a' : v.toFixed(digits));
  return `${figure(s.mean_accepted_length, 2)} tokens per verification (${figure(s.acceptance_rate === null ? null : s.acceptance_rate * 100, 1)}% of ${s.draft_tokens} drafts accepted)`;
}

export function throughputReport(r: ThroughputResults): string {
  return [
    `Throughput (${r.workload}, ${r.num_requests} requests, ${r.elapsed_s.toFixed(2)} s):`,
    `  ${r.requests_per_s.toFixed(2)} requests/s, ${r.total_tokens_per_s.toFixed(1)} total tokens/s`,
    `  ${r.input_tokens_per_s.toFixed(1)} input tokens/s, ${r.output_tokens_per_s.toFixed(1)} output tokens/s`,
    ...(r.roofline?.fraction != null ? [`  ${(r.roofline.fraction * 100).toFixed(1)} % of the device bound (${r.roofline.bound_s!.toFixed(2)} s)`] : []),
    ...(r.speculation ? [`  speculative decoding: ${speculationText(r.speculation)}`] : []),
    ...(r.repeats ? [`  median of ${r.repeats.output_tokens_per_s.length} runs; output tokens/s ${r.repeats.min_output_tokens_per_s.toFixed(1)}..${r.repeats.max_output_tokens_per_s.toFixed(1)}, spread ${(r.repeats.relative_spread * 100).toFixed(1)} %`] : []),
  ].join('\n');
}

/** `keel bench verify`'s table: each batch size's plain decode step, then its verification pass of each query length. */
export function verifyTable(r: VerifyResults): string {
  const row = (batch: string, step: string, mean: string, median: string, perToken: string, ratio: string, graph: string) =>
    `${batch.padStart(5)}  ${step.padEnd(8)}${mean.padStart(10)}${median.padStart(10)}${perToken.padStart(12)}${ratio.padStart(10)}  ${graph}`;
  const lines = [row('batch', 'step', 'mean ms', 'median ms', 'ms/token', 'x decode', 'graph')];
  for (const d of r.decode) {
    lines.push(row(String(d.batch_size), 'decode', d.mean_step_ms.toFixed(3), d.median_step_ms.toFixed(3), d.ms_per_token.toFixed(4), '1.00', d.cuda_graph ? 'yes' : 'no'));
    for (const v of r.verify.filter((v) => v.batch_size === d.batch_size)) {
      lines.push(row('', `q=${v.query_tokens}`, v.mean_step_ms.toFixed(3), v.median_step_ms.toFixed(3), v.ms_per_query_token.toFixed(4), v.ratio_to_decode.toFixed(2), v.cuda_graph ? 'yes' : 'no'));
    }
  }
  return lines.join('\n');
}

const WIDTH = 50;

function centered(text: string, fill: string): string {
  const left = Math.max(0, Math.floor((WIDTH - text.length) / 2));
  return `${fill.repeat(left)}${text}${fill.repeat(Math.max(0, WIDTH - text.length - left))}`;
}

/** The layout of vLLM's "Serving Benchmark Result" block. */
export function serveReport(r: ServeResults): string {
  const line = (label: string, value: string) => `${label.padEnd(40)}${value}`;
  const block = (title: string, key: 'ttft_ms' | 'tpot_ms' | 'itl_ms' | 'e2el_ms') => {
    const f = r as unknown as Record<string, number | null>;
    return [
      centered(` ${title} `, '-'),
      ...(['mean', 'median', 'p90', 'p99'] as const).map((s) => line(`${s[0].toUpperCase()}${s.slice(1)} ${key.split('_')[0].toUpperCase()} (ms):`, f[`${s}_${key}`]?.toFixed(2) ?? 'n/a')),
    ];
  };
  return [
    centered(' Serving Benchmark Result ', '='),
    line('Successful requests:', String(r.completed)),
    line('Failed requests:', String(r.failed)),
    line('Benchmark duration (s):', r.duration_s.toFixed(2)),
    line('Total input tokens:', String(r.total_input_tokens)),
    line('Total generated tokens:', String(r.total_output_tokens)),
    line('Request throughput (req/s):', r.request_throughput.toFixed(2)),
    line('Output token throughput (tok/s):', r.output_throughput.toFixed(2)),
    line('Total token throughput (tok/s):', r.total_token_throughput.toFixed(2)),
    ...block('Time to First Token', 'ttft_ms'),
    ...block('Time per Output Token (excl. 1st token)', 'tpot_ms'),
    ...block('Inter-token Latency', 'itl_ms'),
    ...block('End-to-end Latency', 'e2el_ms'),
    ...(r.multi_turn ? multiTurnLines(r.multi_turn, line) : []),
    ...(r.server_metrics ? serverLines(r.server_metrics, line) : []),
    '='.repeat(WIDTH),
    ...r.errors.map((e) => `error: ${e}`),
  ].join('\n');
}

/** The multi-turn figures: TTFT of first and later turns. */
function multiTurnLines(m: MultiTurnResults, line: (label: string, value: string) => string): string[] {
  return [
    centered(` Multi-turn (${m.num_conversations} conversations x ${m.num_turns} turns) `, '-'),
    line('Mean TTFT, first turns (ms):', m.mean_first_turn_ttft_ms?.toFixed(2) ?? 'n/a'),
    line('Mean TTFT, later turns (ms):', m.mean_later_turns_ttft_ms?.toFixed(2) ?? 'n/a'),
    line('P99 TTFT, later turns (ms):', m.p99_later_turns_ttft_ms?.toFixed(2) ?? 'n/a'),
    line('Mean TTFT by turn (ms):', m.mean_ttft_ms_by_turn.map((v) => v?.toFixed(1) ?? 'n/a').join(' ')),
  ];
}

/** The server's own figures over the run: prefix cache, preemptions, speculative decoding. */
function serverLines(s: ServerMetricsResults, line: (label: string, value: string) => string): string[] {
  const percent = (v: number) => `${(v * 100).toFixed(1)} %`;
  const spec = s.speculation;
  return [
    centered(' Server (its /metrics over the run) ', '-'),
    line('Prefix cache hit rate, GPU:', percent(s.prefix_cache_hit_rate.device)),
    line('Prefix cache hit rate, host:', percent(s.prefix_cache_hit_rate.host)),
    line('Preemptions (swapped):', `${s.preemptions} (${s.swaps})`),
    ...(spec ? [line('Speculative decoding:', speculationText(spec))] : []),
    ...(spec && spec.acceptance_rate_by_position.length > 0 ? [line('Acceptance by draft position (%):', spec.acceptance_rate_by_position.map((v) => (v * 100).toFixed(1)).join(' '))] : []),
  ];
}

/** The step timeline's summary in a few lines: the device's busy share, and the host's. */
export function stepTimelineReport(t: StepTimelineSummary): string {
  const pct = (v: number | null) => (v === null ? 'n/a' : `${(v * 100).toFixed(1)} %`);
  const perToken = (v: number | null) => (v === null ? 'n/a' : `${(v * 1000).toFixed(1)} µs/token`);
  const phases = Object.entries(t.host_ms).map(([phase, v]) => `${phase} ${v.toFixed(0)}`);
  return [
    `Step timeline (${t.steps} steps, ${t.launched_steps} launched, ${t.wall_ms.toFixed(0)} ms; ${t.file}):`,
    `  device busy ${t.device_busy_ms.toFixed(0)} ms (${pct(t.device_busy_fraction)}): forward ${pct(t.forward_fraction)}, sampling ${pct(t.sampling_fraction)}; ` +
      `idle between steps ${t.device_idle_ms.toFixed(0)} ms, median gap ${ms(t.median_gap_ms)}`,
    ...t.by_kind.map((k) => `  ${k.kind}: ${k.steps} steps, batch ${k.mean_batch_size.toFixed(1)}, device ${k.device_ms.toFixed(0)} ms (${perToken(k.device_ms_per_token)}), host work ${k.host_work_ms.toFixed(0)} ms`),
    `  host ms: ${phases.join(', ')}; host beyond device ${t.host_critical_ms.toFixed(0)} ms over ${t.host_bound_steps} steps`,
  ].join('\n');
}
