import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';

/**
 * The tiers of src/, lowest first. A folder's code may import its own folder and the folders
 * listed for it, nothing else: the backend knows ops, not models or the engine; layers know the
 * backend; models compose layers; the engine runs models; servers, CLIs and benchmarks sit on top.
 */
const ALLOWED: Record<string, readonly string[]> = {
  tensor: ['errors.ts'],
  step: ['errors.ts'],
  sampling: ['errors.ts'],
  checkpoint: ['errors.ts', 'tensor'],
  parallel: ['errors.ts'],
  backend: ['errors.ts', 'tensor', 'step', 'sampling', 'parallel'],
  layers: ['errors.ts', 'tensor', 'step', 'backend'],
  models: ['errors.ts', 'tensor', 'step', 'sampling', 'checkpoint', 'backend', 'layers'],
  tokenizer: ['errors.ts', 'checkpoint', 'sampling'],
  structured: ['errors.ts', 'sampling', 'tokenizer'],
  'model-source': ['errors.ts', 'checkpoint'],
};

const SRC = resolve('src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts') ? [path] : [];
  });
}

/** The relative module paths a file imports or re-exports (static and dynamic). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const found = [...text.matchAll(/(?:from|import\()\s*'(\.[^']+)'/g)].map((m) => m[1]);
  return found.map((spec) => resolve(dirname(file), spec));
}

/** The tier of a path under src/: its top folder, or the file name for a file directly in src/. */
function tierOf(path: string): string {
  return relative(SRC, path).split(/[\\/]/)[0];
}

test('each tier of src/ imports only the tiers below it (the backend knows nothing of models or the engine)', () => {
  const violations: string[] = [];
  for (const file of sourceFiles(SRC)) {
    const tier = tierOf(file);
    const allowed = ALLOWED[tier];
    if (allowed === undefined) continue;
    for (const target of importsOf(file)) {
      const to = tierOf(target);
      if (to !== tier && !allowed.includes(to)) violations.push(`${relative(SRC, file)} imports ${relative(SRC, target)}`);
    }
  }
  assert.deepEqual(violations, []);
});

test('nothing under src/ imports test code', () => {
  const violations = sourceFiles(SRC).flatMap((file) =>
    importsOf(file)
      .filter((target) => relative(SRC, target).startsWith('..'))
      .map((target) => `${relative(SRC, file)} imports ${relative(process.cwd(), target)}`),
  );
  assert.deepEqual(violations, []);
});

test('the layering rules see every import form the code uses', () => {
  // A check that finds nothing because it parses nothing would pass vacuously.
  const backendImports = sourceFiles(join(SRC, 'backend')).flatMap(importsOf);
  assert.ok(backendImports.length > 50, `only ${backendImports.length} imports found under src/backend`);
  assert.ok(importsOf(join(SRC, 'backend', 'select-backend.ts')).some((p) => p.endsWith('cuda-backend.ts')), 'dynamic imports are seen');
});
