import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { invalidArgument } from '../errors.ts';
import { BenchResultSchema, type BenchResult } from './result-schema.ts';

/**
 * Where results go when no --output is given: bench-results/ in the current directory, wherever
 * Keel is installed (the results this project publishes are kept in its checkout's bench/results/).
 */
export const DEFAULT_RESULTS_DIR = 'bench-results';

/** e.g. latency-keel-tiny-cpu-2026-11-23T10-00-00Z.json: suite, model, device kind, time. */
function defaultResultPath(result: BenchResult): string {
  const stamp = result.date.replace(/\.\d+/, '').replaceAll(':', '-');
  const parts = [result.suite, result.engine === 'keel' ? null : result.engine, result.model?.name ?? 'server', result.device.backend ?? 'unknown', stamp];
  return join(resolve(DEFAULT_RESULTS_DIR), `${parts.filter((p) => p !== null).join('-')}.json`);
}

/** Checks the result against the schema (a bug here must not write a file the plots reject), then writes it. */
export function writeResult(result: BenchResult, output: string | undefined): string {
  const checked = BenchResultSchema.parse(result);
  const path = output ?? defaultResultPath(checked);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(checked, null, 2)}\n`);
  return path;
}

export function readResult(path: string): BenchResult {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    throw invalidArgument(`cannot read benchmark result ${path}: ${(error as Error).message}`);
  }
  const parsed = BenchResultSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw invalidArgument(`${path} is not a benchmark result: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return parsed.data;
}
