// Where a run's device time goes kernel by kernel, from Nsight Compute's CSV, for reading on the GPU
// host without carrying the report back:
//
//   ncu --clock-control none --csv --metrics gpu__time_duration.sum ... > run.csv
//   node scripts/ncu-kernel-summary.ts run.csv [--per 2]
//
// Prints each kernel name's launches and total time (divided by --per, e.g. the steps profiled),
// most time first, and the total. Lines before the CSV header (ncu's ==PROF== lines, the program's
// own output) are skipped.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { per: { type: 'string' } } });
if (positionals.length !== 1) throw new Error('usage: node scripts/ncu-kernel-summary.ts RUN.csv [--per N]');
const per = Number(values.per ?? 1);
if (!(per > 0)) throw new Error(`--per must be a positive number, not ${values.per}`);

/** One CSV line's fields: ncu quotes every field and doubles quotes inside. */
function fields(line: string): string[] {
  const out: string[] = [];
  for (const m of line.matchAll(/"((?:[^"]|"")*)"/g)) out.push(m[1].replaceAll('""', '"'));
  return out;
}

const lines = readFileSync(positionals[0], 'utf8').split('\n');
const headerAt = lines.findIndex((l) => l.startsWith('"ID"'));
if (headerAt < 0) throw new Error(`${positionals[0]} holds no ncu CSV header (a line starting "ID")`);
const header = fields(lines[headerAt]);
const col = (name: string) => {
  const i = header.indexOf(name);
  if (i < 0) throw new Error(`the CSV has no column ${name}`);
  return i;
};
const [nameCol, metricCol, unitCol, valueCol] = ['Kernel Name', 'Metric Name', 'Metric Unit', 'Metric Value'].map(col);
// ncu names the unit in full (nsecond) or short (ns), by version.
const usPerUnit: Record<string, number> = { nsecond: 1e-3, usecond: 1, msecond: 1e3, second: 1e6, ns: 1e-3, us: 1, ms: 1e3, s: 1e6 };

const byKernel = new Map<string, { launches: number; us: number }>();
for (const line of lines.slice(headerAt + 1)) {
  const f = fields(line);
  if (f.length <= valueCol || f[metricCol] !== 'gpu__time_duration.sum') continue;
  const scale = usPerUnit[f[unitCol]];
  if (scale === undefined) throw new Error(`unknown time unit ${f[unitCol]}`);
  // Template arguments and parameter lists make one kernel many names: keep the name itself.
  const name = f[nameCol].replace(/[<(].*$/, '');
  const entry = byKernel.get(name) ?? { launches: 0, us: 0 };
  entry.launches++;
  entry.us += Number(f[valueCol].replaceAll(',', '')) * scale;
  byKernel.set(name, entry);
}
let total = 0;
for (const [name, { launches, us }] of [...byKernel].sort((a, b) => b[1].us - a[1].us)) {
  total += us / per;
  console.log(`${(us / per).toFixed(1).padStart(10)} µs ${String(launches / per).padStart(7)} launches  ${name}`);
}
console.log(`${total.toFixed(1).padStart(10)} µs in all${per === 1 ? '' : ` (per ${per})`}`);
