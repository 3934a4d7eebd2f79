import assert from 'node:assert/strict';
import { KeelError } from '../../src/errors.ts';

/** Asserts that `run` throws an invalid_model KeelError whose message holds every one of `fragments`. */
export function assertInvalidModel(run: () => unknown, ...fragments: string[]): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof KeelError && error.kind === 'invalid_model', `expected invalid_model KeelError, got ${error}`);
    for (const f of fragments) assert.ok(error.message.includes(f), `"${error.message}" lacks "${f}"`);
    return true;
  });
}
