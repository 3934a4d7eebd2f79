/**
 * Keel's side of tools/oracle/config_fuzz.py: every checkpoint directory with an oracle.json (as
 * make_fixtures.py writes them) checked on the CPU backend the way the parity suite checks the
 * fixtures: last-token logits of the prompts batched together within 1e-4 standard deviations of
 * transformers', then the greedy continuations token for token. One JSON line per directory:
 * {"dir", "logits": "ok" | error, "greedy": "ok" | error} (no greedy run where the logits, or the load, failed).
 *
 * With --engine, every check of the parity suite instead (chunked prefill, forced preemption,
 * speculative drafts, weight offload, the prefix cache and its host tier, ...) and tensor parallel 2
 * and pipeline parallel 2 (where the model has two layers, and no KV-shared layer of the second
 * stage reads a layer of the first: Gemma 4's refuse that split), CPU ranks in worker threads:
 * {"dir", "logits": ..., "greedy": "ok" | the failed checks' names and errors}.
 *
 *   node --import tsx scripts/oracle-check.ts [--engine] DIR...
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { pipelineStage } from '../src/models/pipeline-stage.ts';
import { readModelArchitecture } from '../src/models/registry.ts';
import { checkGreedy, checkLogits, fixtureKeepsSequenceState, fixtureKvLayers, parityChecks, type ParityCheck, type ParityOptions } from '../test/helpers/transformers-parity.ts';
import type { OracleFixture } from '../test/helpers/oracle-fixtures.ts';

// A drawn config's window may hold more blocks than the small pools were sized for: whether they
// preempted is not checked, only that the tokens are equal and the pool is whole again.
const OPTIONS: ParityOptions = { backend: 'cpu', logitTolerance: 1e-4, greedy: 'exact', checkPreemption: false };
const args = process.argv.slice(2);
const engine = args.includes('--engine');
const dirs = args.filter((a) => a !== '--engine');
if (dirs.length === 0) throw new Error('oracle-check.ts: give one or more checkpoint directories holding an oracle.json');

const message = (error: unknown) => (error instanceof Error ? error.message : String(error)).split('\n').slice(0, 6).join(' | ');

/** The greedy checks: the plain batched run, or with --engine every engine variant and parallel layout. */
function greedyChecks(fixture: OracleFixture): ParityCheck[] {
  if (!engine) return [{ name: 'greedy continuation', run: async () => void (await checkGreedy(fixture, OPTIONS, {}, false)) }];
  // Hybrid (Gated DeltaNet) draws run on one device: config_fuzz.py draws their linear-attention
  // heads without two ranks in mind (often a single key head); test/parallel-parity.test.ts runs the
  // hybrid fixtures at tensor and pipeline parallel 2.
  if (fixtureKeepsSequenceState(fixture)) return parityChecks(fixture, OPTIONS).slice(1);
  const parallel: ParityCheck[] = [
    { name: 'greedy continuation: tensor parallel 2', run: async () => void (await checkGreedy(fixture, OPTIONS, { tensorParallelSize: 2 }, false)) },
  ];
  if (readModelArchitecture(fixture.dir).config.numLayers >= 2 && !sharesKvAcrossStages(fixture)) {
    parallel.push({ name: 'greedy continuation: pipeline parallel 2', run: async () => void (await checkGreedy(fixture, OPTIONS, { pipelineParallelSize: 2 }, false)) });
  }
  return [...parityChecks(fixture, OPTIONS).slice(1), ...parallel];
}

/** Whether some layer of the second of two pipeline stages reads the keys and values of a layer of the first (a KV-shared layer). */
function sharesKvAcrossStages(fixture: OracleFixture): boolean {
  const layers = fixtureKvLayers(fixture);
  const { firstLayer } = pipelineStage(layers.length, 1, 2);
  return layers.some((spec, i) => spec.kind === 'attention' && spec.sharedKvDistance !== undefined && i >= firstLayer && i - spec.sharedKvDistance < firstLayer);
}

for (const dir of dirs) {
  const oraclePath = join(dir, 'oracle.json');
  if (!existsSync(oraclePath)) throw new Error(`oracle-check.ts: ${oraclePath} does not exist`);
  const result: Record<string, string> = { dir };
  try {
    const fixture: OracleFixture = { name: basename(dir), dir, oracle: JSON.parse(readFileSync(oraclePath, 'utf8')) };
    await checkLogits(fixture, OPTIONS);
    result.logits = 'ok';
    const failures: string[] = [];
    for (const check of greedyChecks(fixture)) {
      try {
        await check.run();
      } catch (error) {
        failures.push(`${check.name}: ${message(error)}`);
      }
    }
    result.greedy = failures.length === 0 ? 'ok' : failures.join(' || ');
  } catch (error) {
    result.logits = message(error);
  }
  console.log(JSON.stringify(result));
}
