import type { TopLevelSpec } from 'vega-lite';
import { invalidArgument } from '../errors.ts';
import type { BenchResult } from './result-schema.ts';

type Rows = Record<string, string | number>[];

/** How a result is named in a legend: engine, model and device kind. */
export function seriesLabel(result: BenchResult): string {
  return `${result.engine} ${result.model?.name ?? 'server'} (${result.device.backend ?? 'unknown device'})`;
}

/**
 * A Vega-Lite spec for results of one suite: latency vs batch size (lines), throughput per
 * workload (bars), serve latency percentiles (bars). Failed runs are left out of the plot.
 */
export function plotSpec(results: BenchResult[]): TopLevelSpec {
  const suites = [...new Set(results.map((r) => r.suite))];
  if (suites.length !== 1) throw invalidArgument(`a plot shows one suite; these results mix ${suites.join(', ')}`);
  const ok = results.filter((r) => r.status === 'ok');
  if (ok.length === 0) throw invalidArgument('none of these results succeeded: nothing to plot');
  switch (suites[0]) {
    case 'latency':
      return latencySpec(ok);
    case 'throughput':
      return throughputSpec(ok);
    case 'serve':
      return serveSpec(ok);
    default:
      throw invalidArgument(`there is no plot for the "${suites[0]}" suite (plots: latency, throughput, serve)`);
  }
}

const LATENCY_METRICS = ['TTFT (ms)', 'TPOT (ms)', 'E2E latency (ms)', 'decode tokens/s'];

function latencySpec(results: BenchResult[]): TopLevelSpec {
  const rows: Rows = results.flatMap((r) =>
    r.suite !== 'latency' || !r.results
      ? []
      : r.results.batches.flatMap((b) =>
          (
            [
              ['TTFT (ms)', b.mean_ttft_ms],
              ['TPOT (ms)', b.mean_tpot_ms],
              ['E2E latency (ms)', b.mean_e2el_ms],
              ['decode tokens/s', b.decode_tokens_per_s],
            ] as const
          ).flatMap(([metric, value]) => (value === null ? [] : [{ series: seriesLabel(r), batch_size: b.batch_size, metric, value }])),
        ),
  );
  const batchSizes = [...new Set(rows.map((r) => r.batch_size))];
  return facetted('Latency vs batch size (mean over iterations)', rows, LATENCY_METRICS, {
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'batch_size', type: 'quantitative', scale: { type: 'log', base: 2 }, axis: { values: batchSizes }, title: 'batch size' },
      y: { field: 'value', type: 'quantitative', title: null },
      color: { field: 'series', type: 'nominal', title: null },
    },
  });
}

const THROUGHPUT_METRICS = ['output tokens/s', 'total tokens/s', 'requests/s'];

function throughputSpec(results: BenchResult[]): TopLevelSpec {
  const rows: Rows = results.flatMap((r) =>
    r.suite !== 'throughput' || !r.results
      ? []
      : [
          { series: seriesLabel(r), workload: r.results.workload, metric: 'output tokens/s', value: r.results.output_tokens_per_s },
          { series: seriesLabel(r), workload: r.results.workload, metric: 'total tokens/s', value: r.results.total_tokens_per_s },
          { series: seriesLabel(r), workload: r.results.workload, metric: 'requests/s', value: r.results.requests_per_s },
        ],
  );
  return facetted('Offline throughput per workload', rows, THROUGHPUT_METRICS, groupedBars('workload', null));
}

const SERVE_METRICS = ['TTFT (ms)', 'TPOT (ms)', 'ITL (ms)', 'E2E latency (ms)'];
const SERVE_STATS = ['mean', 'median', 'p90', 'p99'] as const;

function serveSpec(results: BenchResult[]): TopLevelSpec {
  const keys = { 'TTFT (ms)': 'ttft_ms', 'TPOT (ms)': 'tpot_ms', 'ITL (ms)': 'itl_ms', 'E2E latency (ms)': 'e2el_ms' } as const;
  const rows: Rows = results.flatMap((r) => {
    if (r.suite !== 'serve' || !r.results) return [];
    const figures = r.results as unknown as Record<string, number | null>;
    return Object.entries(keys).flatMap(([metric, key]) =>
      SERVE_STATS.flatMap((stat) => {
        const value = figures[`${stat}_${key}`];
        return value === null ? [] : [{ series: seriesLabel(r), metric, stat, value }];
      }),
    );
  });
  return facetted('Online serving latency (vllm bench serve metrics)', rows, SERVE_METRICS, groupedBars('stat', [...SERVE_STATS]));
}

function groupedBars(xField: string, order: string[] | null): Record<string, unknown> {
  return {
    mark: 'bar',
    encoding: {
      x: { field: xField, type: 'nominal', title: null, axis: { labelAngle: 0 }, ...(order ? { sort: order } : {}) },
      xOffset: { field: 'series' },
      y: { field: 'value', type: 'quantitative', title: null },
      color: { field: 'series', type: 'nominal', title: null },
    },
  };
}

/** One small chart per metric, side by side, each with its own y scale (the units differ). */
function facetted(title: string, rows: Rows, metrics: string[], spec: Record<string, unknown>): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    data: { values: rows },
    facet: { column: { field: 'metric', type: 'nominal', title: null, sort: metrics } },
    spec: { width: 200, height: 180, ...spec },
    resolve: { scale: { y: 'independent' } },
    config: { legend: { orient: 'bottom', labelLimit: 400 } },
  } as TopLevelSpec;
}
