// Mean accepted length of every speculative method for keel-tiny on held-out code, through Keel
// itself: greedy continuations (end-of-text held back) of prompts cut from this repository's own tools/**/*.py (code the
// model never saw), each method's engine totals (LLM.stats().speculation), and every method's
// output checked equal to plain greedy decoding's. Prints a markdown table
// (docs/speculative-decoding.md). Run it with
// `node --import tsx scripts/speculative-heads-acceptance.ts [--backend cpu|cuda] [--prompts N] [--max-tokens N] [-k K] [--heads DIR]`.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { EngineOptions } from '../src/config.ts';
import { LLM } from '../src/engine/llm.ts';
import { DEFAULT_MODEL_DIR } from '../src/engine/load-engine.ts';

const ROOT = join(import.meta.dirname, '..');
const LINES_PER_PROMPT = 12;

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'cpu' },
    prompts: { type: 'string', default: '16' },
    'max-tokens': { type: 'string', default: '64' },
    k: { type: 'string', short: 'k', default: '4' },
    heads: { type: 'string', default: join(DEFAULT_MODEL_DIR, '..') },
  },
});
const backend = values.backend === 'cuda' ? 'cuda' : 'cpu';
const numPrompts = Number(values.prompts);
const maxTokens = Number(values['max-tokens']);
const k = Number(values.k);
/** Where keel-tiny-eagle3 and keel-tiny-medusa are (the target and its draft are always the shipped ones). */
const HEADS = values.heads;
const MODELS = join(DEFAULT_MODEL_DIR, '..');

/** Python files under tools/, sorted: the repository's own code, none of it in keel-tiny's corpus. */
function pythonFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? pythonFiles(join(dir, e.name)) : e.name.endsWith('.py') ? [join(dir, e.name)] : []))
    .sort();
}

/** `count` prompts of LINES_PER_PROMPT lines each, taken round-robin from the files at evenly spaced places. */
function heldOutPrompts(count: number): string[] {
  const files = pythonFiles(join(ROOT, 'tools')).map((f) => readFileSync(f, 'utf8').split('\n'));
  const perFile = Math.ceil(count / files.length);
  const prompts: string[] = [];
  for (let cut = 0; cut < perFile; cut++) {
    for (const lines of files) {
      if (prompts.length === count) return prompts;
      const start = Math.floor(((cut + 1) * (lines.length - LINES_PER_PROMPT)) / (perFile + 1));
      prompts.push(lines.slice(Math.max(0, start), start + LINES_PER_PROMPT).join('\n') + '\n');
    }
  }
  return prompts;
}

const METHODS: { name: string; speculative: EngineOptions['speculative'] }[] = [
  { name: 'n-gram (n 2-4)', speculative: { method: 'ngram', numSpeculativeTokens: k } },
  { name: 'draft model keel-tiny-draft', speculative: { model: join(MODELS, 'keel-tiny-draft'), numSpeculativeTokens: k } },
  { name: 'EAGLE-3 chain', speculative: { method: 'eagle3', model: join(HEADS, 'keel-tiny-eagle3'), numSpeculativeTokens: k } },
  { name: 'EAGLE-3 tree (width 4)', speculative: { method: 'eagle3', model: join(HEADS, 'keel-tiny-eagle3'), numSpeculativeTokens: k, treeWidth: 4 } },
  { name: 'Medusa (default tree)', speculative: { method: 'medusa', model: join(HEADS, 'keel-tiny-medusa'), numSpeculativeTokens: k } },
];

const prompts = heldOutPrompts(numPrompts);
// End-of-text is held back (minTokens) so that every continuation continues the held-out code, as
// a greedy model that ends the document at once would otherwise continue a new, generic one.
const params = { temperature: 0, maxTokens, minTokens: maxTokens };
const base = { backend, showProgress: false } as const;

async function run(speculative: EngineOptions['speculative']) {
  const llm = await LLM.load({ ...base, speculative });
  try {
    const started = performance.now();
    const outputs = await llm.generate(prompts, params);
    const seconds = (performance.now() - started) / 1000;
    return { tokens: outputs.map((o) => o.outputs[0].tokenIds), seconds, speculation: llm.stats().speculation };
  } finally {
    await llm.close();
  }
}

const plain = await run(null);
console.log(`${prompts.length} held-out prompts from tools/**/*.py, ${maxTokens} greedy tokens each, K = ${k}, ${backend} backend; plain decoding ${plain.seconds.toFixed(1)} s`);
console.log('');
console.log('| method | drafts per verification | acceptance rate | mean accepted length | tokens per decode pass | acceptance by position | wall s |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const { name, speculative } of METHODS) {
  const result = await run(speculative);
  const differing = result.tokens.filter((t, i) => t.length !== plain.tokens[i].length || t.some((id, j) => id !== plain.tokens[i][j])).length;
  // Exact on the CPU; on CUDA a verification row's bf16 rounding may turn a near-tie (docs/speculative-decoding.md, Correctness).
  if (differing > 0 && backend === 'cpu') throw new Error(`${name}: ${differing} outputs differ from plain greedy decoding`);
  if (differing > 0) console.log(`(${name}: ${differing} of ${prompts.length} outputs differ from plain decoding's at a near-tie)`);
  const s = result.speculation!;
  // Verifications count only steps that drafted; decode passes also count the steps that did not (an n-gram without a match).
  const decoded = prompts.length * (maxTokens - 1);
  const passes = decoded - s.numAcceptedTokens;
  const perPosition = s.acceptanceRateByPosition.map((r) => r.toFixed(2)).join(' / ');
  console.log(`| ${name} | ${(s.numDraftTokens / Math.max(1, s.numSteps)).toFixed(1)} | ${(s.acceptanceRate ?? 0).toFixed(3)} | ${(s.meanAcceptedLength ?? 1).toFixed(2)} | ${(decoded / passes).toFixed(2)} | ${perPosition} | ${result.seconds.toFixed(1)} |`);
}
