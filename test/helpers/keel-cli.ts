import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs bin/keel (from the repo root) without blocking the event loop, so an in-process server can answer it. */
export async function keel(args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)('bin/keel', args, { encoding: 'utf8' });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** `keel`, failing the test unless it exits 0. */
export async function keelOk(args: string[]): Promise<Run> {
  const run = await keel(args);
  assert.equal(run.code, 0, run.stderr);
  return run;
}
