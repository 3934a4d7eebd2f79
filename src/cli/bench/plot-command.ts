import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { invalidArgument } from '../../errors.ts';
import { plotSpec } from '../../bench/plot-specs.ts';
import { readResult } from '../../bench/result-file.ts';
import { parseFlags } from '../parse-flags.ts';

export const PLOT_HELP = `Usage: keel bench plot RESULT.json... --output FILE.svg

Renders benchmark results of one suite to an SVG chart (Vega-Lite, headless):
latency: TTFT, TPOT, end-to-end latency and decode tokens/s vs batch size, one line per run;
throughput: output, total tokens/s and requests/s per workload, one bar per run;
serve: mean, median, p90 and p99 of TTFT, TPOT, ITL and end-to-end latency, one bar per run.
Results of Keel and of its peers (tools/peers) plot together; failed runs are left out.

  --output FILE                  the SVG to write (required)`;

export async function plotCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseFlags('keel bench plot', {
    args: argv,
    options: { output: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help) {
    console.log(PLOT_HELP);
    return;
  }
  if (positionals.length === 0) throw invalidArgument('give at least one result JSON file (see keel bench plot --help)');
  if (!values.output) throw invalidArgument('give --output FILE.svg');
  const spec = plotSpec(positionals.map(readResult));
  // Loaded here only: vega is needed by this command alone.
  const { renderSvg } = await import('../../bench/render-svg.ts');
  const svg = await renderSvg(spec);
  mkdirSync(dirname(values.output), { recursive: true });
  writeFileSync(values.output, svg);
  console.log(`wrote ${values.output}`);
}
