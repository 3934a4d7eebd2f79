/**
 * Where two backends' numbers for one model part, layer by layer (and op by op with --ops), in one
 * run: each backend loads the model directory and prefills the same prompts in one step; the first
 * backend listed is the reference. docs/cuda-backend.md, "Finding the op that differs", says how
 * to read it.
 *
 *   node scripts/compare-backends.ts --model test/fixtures/deepseek-v32 [--backends cpu,cpu-bf16,cuda]
 *     [--prompt 5,9,11 ...] [--ops] [--threshold 0.05] [--block-size 16] [--set index_topk=128 ...] [--quantization int4]
 *
 * (Node 22 strips the types itself; under Node 20: node --import tsx scripts/compare-backends.ts ...)
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { LOAD_TIME_QUANTIZATIONS, type LoadTimeQuantization } from '../src/tensor/quantize-rtn.ts';
import { BACKEND_NAMES, compareTraces, difference, relative, tokenOf, traceBackend, type BackendName, type ComparedRow, type Trace } from './backend-comparison.ts';

const USAGE = `usage: node scripts/compare-backends.ts --model DIR [options]

Prefills the same prompts (all in one step) on each backend and prints, against the first
backend listed, max |Δ| of the residual stream entering every decoder layer, of the final norm's
output and of each prompt's last-token logits (and, with oracle.json in DIR, each backend's
logits against transformers' float32 ones, and its bfloat16 ones where the oracle has them).

  --model DIR          a Hugging Face model directory (or .gguf file)
  --backends A,B,...   backends to run, the reference first (default cpu,cpu-bf16,cuda);
                       cpu-bf16 is the CPU backend with weights and activations rounded to bf16
                       as the CUDA backend stores them: the difference bf16 alone makes
  --prompt IDS         comma-separated token ids of one prompt; repeat for more (default: the
                       prompts of DIR/oracle.json)
  --ops                also compare every backend op's result, in call order
  --threshold R        flag the first row whose max |Δ| exceeds R × max |reference| (default 0.05)
  --block-size N       KV cache block size (default 16)
  --set KEY=JSON       run a copy of DIR whose config.json has KEY set to the JSON value, e.g.
                       index_topk=128 (every position selected); repeatable; the oracle's logits,
                       which are for DIR's config, are then not compared
  --quantization Q     quantize the weights at load on every backend (${LOAD_TIME_QUANTIZATIONS.join(', ')}),
                       as --quantization does for keel: a format's kernels against the CPU twin
  --help               this text`;

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    backends: { type: 'string', default: 'cpu,cpu-bf16,cuda' },
    prompt: { type: 'string', multiple: true },
    ops: { type: 'boolean', default: false },
    threshold: { type: 'string', default: '0.05' },
    'block-size': { type: 'string', default: '16' },
    set: { type: 'string', multiple: true },
    quantization: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});

function fail(message: string): never {
  process.stderr.write(`compare-backends: ${message}\n\n${USAGE}\n`);
  process.exit(2);
}

if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const givenDir = values.model ?? fail('--model is required');
const backends = values.backends.split(',').map((name) => {
  if (!(BACKEND_NAMES as readonly string[]).includes(name)) fail(`unknown backend "${name}" (one of ${BACKEND_NAMES.join(', ')})`);
  return name as BackendName;
});
if (backends.length < 2) fail('--backends needs at least two backends: the reference, then those compared with it');
const threshold = Number(values.threshold);
if (!(threshold > 0)) fail(`--threshold must be a positive number, not ${values.threshold}`);
const quantization = values.quantization as LoadTimeQuantization | undefined;
if (quantization !== undefined && !LOAD_TIME_QUANTIZATIONS.includes(quantization)) fail(`unknown --quantization "${values.quantization}" (one of ${LOAD_TIME_QUANTIZATIONS.join(', ')})`);
const blockSize = Number(values['block-size']);
if (!(Number.isInteger(blockSize) && blockSize > 0)) fail(`--block-size must be a positive integer, not ${values['block-size']}`);

/** A temporary copy of `dir` (its files linked) whose config.json has `overrides` set. */
function withConfig(dir: string, overrides: string[]): string {
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  for (const entry of overrides) {
    const at = entry.indexOf('=');
    if (at <= 0) fail(`--set "${entry}" is not KEY=JSON`);
    try {
      config[entry.slice(0, at)] = JSON.parse(entry.slice(at + 1));
    } catch {
      fail(`--set "${entry}": the value is not JSON (quote strings: key='"text"')`);
    }
  }
  const copy = mkdtempSync(join(tmpdir(), 'keel-compare-'));
  process.on('exit', () => rmSync(copy, { recursive: true, force: true }));
  for (const file of readdirSync(dir)) if (file !== 'config.json') symlinkSync(resolve(dir, file), join(copy, file));
  writeFileSync(join(copy, 'config.json'), JSON.stringify(config));
  return copy;
}

const modelDir = values.set === undefined ? givenDir : withConfig(givenDir, values.set);
const oraclePath = join(givenDir, 'oracle.json');
const oracle = existsSync(oraclePath) ? (JSON.parse(readFileSync(oraclePath, 'utf8')) as { prompts: number[][]; last_logits?: number[][]; bf16_last_logits?: number[][] }) : null;
const prompts = values.prompt?.map((text) => {
  const ids = text.split(',').map(Number);
  if (ids.length === 0 || !ids.every((id) => Number.isInteger(id) && id >= 0)) fail(`--prompt "${text}" is not comma-separated token ids`);
  return ids;
}) ?? oracle?.prompts ?? fail(`give --prompt (${modelDir} has no oracle.json whose prompts to use)`);
// transformers' float32 logits of the oracle's prompts, and (newer oracles) those of its bfloat16 run.
const oracleLogits = values.prompt === undefined && values.set === undefined && quantization === undefined ? [['float32', oracle?.last_logits], ['bf16', oracle?.bf16_last_logits]].filter((e): e is [string, number[][]] => e[1] !== undefined) : [];

const traces: Trace[] = [];
for (const backend of backends) {
  const began = performance.now();
  traces.push(await traceBackend(modelDir, backend, prompts, { ops: values.ops, blockSize, quantization }));
  process.stderr.write(`compare-backends: ${backend} done in ${((performance.now() - began) / 1000).toFixed(1)} s\n`);
}
const [reference, ...others] = traces;
const { rows, ops, partedAt } = compareTraces(reference, others);

const fmt = (x: number) => (Number.isFinite(x) ? x.toExponential(2) : String(x));
const WHAT = 44;
const CELL = 40;

function cell(row: ComparedRow, k: number): string {
  const d = row.differences[k];
  if (d === null) return '-'.padEnd(CELL);
  const where = row.rowWidth > 0 ? (({ prompt, position }) => ` p${prompt}:${position}`)(tokenOf(reference, Math.floor(d.at / row.rowWidth))) : '';
  return `${fmt(d.maxAbs)} (${(100 * relative(d)).toFixed(2)} %)${where}`.padEnd(CELL);
}

function printTable(title: string, table: ComparedRow[]): void {
  console.log(`\n${title}`);
  console.log(`${'tensor'.padEnd(WHAT)}${'max|ref|'.padEnd(11)}${others.map((o) => `${o.backend}: max|Δ| (rel) worst prompt:position`.padEnd(CELL)).join('')}`);
  for (const row of table) {
    const maxRef = row.differences.find((d) => d !== null)?.maxRef;
    console.log(`${row.what.padEnd(WHAT)}${(maxRef === undefined ? '-' : fmt(maxRef)).padEnd(11)}${others.map((_, k) => cell(row, k)).join('')}`);
  }
}

function firstBeyond(table: ComparedRow[], k: number): ComparedRow | undefined {
  return table.find((row) => {
    const d = row.differences[k];
    return d !== null && relative(d) > threshold;
  });
}

console.log(`compare-backends: ${givenDir}${values.set === undefined ? '' : ` with ${values.set.join(', ')}`}, reference ${reference.backend}, ${prompts.length} prompt(s) of ${prompts.map((p) => p.length).join(', ')} tokens in one prefill step`);
if (reference.layerInputs.length === 0) console.log('(this model does not hand over its layer inputs: final rows and logits only)');
printTable(`against ${reference.backend}:`, rows);
for (const [dtype, refs] of oracleLogits) {
  console.log(`\nlast-token logits against transformers' ${dtype} ones (oracle.json): max|Δ| per prompt`);
  for (const trace of traces) console.log(`${trace.backend.padEnd(12)}${refs.map((ref, i) => fmt(difference(ref, trace.logits[i]).maxAbs)).join('  ')}`);
}
const choosing = traces.filter((trace) => trace.closestChoices.some((c) => c !== null));
if (choosing.length > 0) {
  console.log(`\neach prompt's closest discrete choice (margin: its gap over the candidates' largest magnitude; a small one may go the other way on another backend)`);
  for (const trace of choosing) {
    const cells = trace.closestChoices.map((c, i) => (c === null ? `p${i}: none` : `p${i}:${c.position} ${c.op} ${(100 * c.margin).toFixed(2)} %`));
    console.log(`${trace.backend.padEnd(12)}${cells.join('  ')}`);
  }
}
if (values.ops) {
  printTable(`every op's result against ${reference.backend}'s, in call order:`, ops);
  others.forEach((o, k) => {
    if (partedAt[k] !== null) console.log(`${o.backend}'s ops part from ${reference.backend}'s at #${partedAt[k]} (${o.ops[partedAt[k]!]?.name ?? 'none'} where ${reference.backend} ran ${reference.ops[partedAt[k]!]?.name ?? 'none'}): later ops are not compared`);
  });
}
console.log('');
others.forEach((o, k) => {
  const row = firstBeyond(values.ops ? ops : rows, k) ?? (values.ops ? firstBeyond(rows, k) : undefined);
  console.log(`${o.backend}: ${row === undefined ? `nothing beyond ${values.threshold} × max|ref|` : `first beyond ${values.threshold} × max|ref|: ${row.what}`}`);
});
