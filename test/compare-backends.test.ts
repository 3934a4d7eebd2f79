import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { compareTraces, relative, tokenOf, traceBackend } from '../scripts/backend-comparison.ts';
import { listOracleFixtures, maxAbsDiff } from './helpers/oracle-fixtures.ts';

// scripts/compare-backends.ts on the CPU: the GPU host runs it CPU against CUDA, so here the
// CPU against itself (every difference 0) and against its bf16 emulation (weights and activations
// rounded as CUDA stores them), on DeepSeek-V3.2's fixture, whose sparse MLA and MoE it traces.

const fixture = listOracleFixtures().find((f) => f.name === 'deepseek-v32')!;
const SCRIPT = fileURLToPath(new URL('../scripts/compare-backends.ts', import.meta.url));
const prompts = fixture.oracle.prompts.slice(0, 2);

test('the CPU traced twice: every layer input, final row, logit and op result is equal, and the logits are transformers\'', async () => {
  const [a, b] = [await traceBackend(fixture.dir, 'cpu', prompts, { ops: true }), await traceBackend(fixture.dir, 'cpu', prompts, { ops: true })];
  assert.equal(a.layerInputs.length, 3, 'one input per decoder layer');
  assert.equal(a.numTokens, prompts[0].length + prompts[1].length);
  assert.deepEqual(a.promptStarts, [0, prompts[0].length]);
  assert.deepEqual(tokenOf(a, prompts[0].length + 2), { prompt: 1, position: 2 });
  a.logits.forEach((row, i) => assert.ok(maxAbsDiff(row, fixture.oracle.last_logits[i]) < 1e-4, `prompt ${i}'s logits are transformers'`));
  for (const name of ['mlaAttentionHeads', 'moe', 'gatedLinear']) assert.ok(a.ops.some((op) => op.name === name), `${name} is traced`);
  const { rows, ops, partedAt } = compareTraces(a, [b]);
  assert.deepEqual(partedAt, [null]);
  assert.equal(rows.length, 3 + 1 + prompts.length);
  assert.equal(ops.length, a.ops.length);
  for (const row of [...rows, ...ops]) assert.equal(row.differences[0]?.maxAbs, 0, row.what);
});

test('the CPU against its bf16 emulation: the embedding differs by bf16 rounding alone, later layers by more, and the op sequences agree', async () => {
  const [cpu, bf16] = [await traceBackend(fixture.dir, 'cpu', prompts, { ops: true }), await traceBackend(fixture.dir, 'cpu-bf16', prompts, { ops: true })];
  const { rows, ops, partedAt } = compareTraces(cpu, [bf16]);
  assert.deepEqual(partedAt, [null]);
  const embedding = rows[0].differences[0]!;
  assert.ok(embedding.maxAbs > 0 && relative(embedding) <= 2 ** -8, `layer 0's input is the bf16-rounded embedding: ${JSON.stringify(embedding)}`);
  const last = rows[2].differences[0]!;
  assert.ok(last.maxAbs > embedding.maxAbs && Number.isFinite(last.maxAbs), `rounding accumulates by layer 2: ${JSON.stringify(last)}`);
  assert.ok(ops.every((op) => op.differences[0] !== null && Number.isFinite(op.differences[0].maxAbs)), 'every op result is read back and finite');
});

test('compare-backends.ts runs, prints a row per layer and names a difference beyond the threshold, runs a config override; bad flags exit 2 naming the problem', () => {
  const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', SCRIPT, '--model', fixture.dir, ...args], { encoding: 'utf8' });
  const same = run(['--backends', 'cpu,cpu', '--prompt', prompts[0].join(','), '--ops']);
  assert.equal(same.status, 0, same.stderr);
  for (const line of ['input of layer 2', 'logits of prompt 0', '#0 embedding', 'cpu: nothing beyond 0.05']) assert.ok(same.stdout.includes(line), `prints "${line}":\n${same.stdout}`);
  const bf16 = run(['--backends', 'cpu,cpu-bf16', '--threshold', '1e-6']);
  assert.equal(bf16.status, 0, bf16.stderr);
  assert.match(bf16.stdout, /cpu-bf16: first beyond 1e-6 × max\|ref\|: input of layer 0/);
  assert.match(bf16.stdout, /against transformers' float32 ones/, 'the fixture\'s oracle logits are compared');
  const covering = run(['--backends', 'cpu,cpu-bf16', '--set', 'index_topk=128']);
  assert.equal(covering.status, 0, covering.stderr);
  assert.match(covering.stdout, /deepseek-v32 with index_topk=128, reference cpu/);
  assert.doesNotMatch(covering.stdout, /transformers/, 'the oracle\'s logits are for the fixture\'s own config');
  const bad = run(['--backends', 'cpu,tpu']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown backend "tpu"/);
});
