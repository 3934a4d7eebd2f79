/**
 * Keel's side of tools/oracle/config_fuzz.py: every checkpoint directory with an oracle.json (as
 * make_fixtures.py writes them) checked on the CPU backend the way the parity suite checks the
 * fixtures: last-token logits of the prompts batched together within 1e-4 standard deviations of
 * transformers', then the greedy continuations token for token. One JSON line per directory:
 * {"dir", "logits": "ok" | error, "greedy": "ok" | error} (no greedy run where the logits, or the load, failed).
 *
 *   node --import tsx scripts/oracle-check.ts DIR...
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { checkGreedy, checkLogits, type ParityOptions } from '../test/helpers/transformers-parity.ts';
import type { OracleFixture } from '../test/helpers/oracle-fixtures.ts';

const OPTIONS: ParityOptions = { backend: 'cpu', logitTolerance: 1e-4, greedy: 'exact' };
const dirs = process.argv.slice(2);
if (dirs.length === 0) throw new Error('oracle-check.ts: give one or more checkpoint directories holding an oracle.json');

const message = (error: unknown) => (error instanceof Error ? error.message : String(error)).split('\n').slice(0, 6).join(' | ');
for (const dir of dirs) {
  const oraclePath = join(dir, 'oracle.json');
  if (!existsSync(oraclePath)) throw new Error(`oracle-check.ts: ${oraclePath} does not exist`);
  const result: Record<string, string> = { dir };
  try {
    const fixture: OracleFixture = { name: basename(dir), dir, oracle: JSON.parse(readFileSync(oraclePath, 'utf8')) };
    await checkLogits(fixture, OPTIONS);
    result.logits = 'ok';
    try {
      await checkGreedy(fixture, OPTIONS, {}, false);
      result.greedy = 'ok';
    } catch (error) {
      result.greedy = message(error);
    }
  } catch (error) {
    result.logits = message(error);
  }
  console.log(JSON.stringify(result));
}
