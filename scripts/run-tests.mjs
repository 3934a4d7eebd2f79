// Runs the test suite with node's test runner and tsx. `cpu` runs every *.test.ts except the
// GPU ones (CI has no GPU); `gpu` runs *.gpu.test.ts on the GPU host. Further arguments that are
// paths narrow the search to those folders (`cpu test/server`); flags go to node (as --flag=value).
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const suite = process.argv[2] ?? 'cpu';
const wanted = (name) =>
  suite === 'gpu' ? name.endsWith('.gpu.test.ts') : name.endsWith('.test.ts') && !name.endsWith('.gpu.test.ts');

function collect(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'node_modules' ? [] : collect(path);
    return wanted(entry.name) ? [path] : [];
  });
}

const args = process.argv.slice(3);
const roots = args.filter((arg) => !arg.startsWith('-'));
const extra = args.filter((arg) => arg.startsWith('-'));
const files = (roots.length > 0 ? roots : ['src', 'test']).flatMap(collect).sort();
if (files.length === 0) {
  console.error(`no ${suite} test files found`);
  process.exit(1);
}
// Node 22.18+ runs TypeScript itself (the GPU host carries no tsx); older Node needs tsx's loader.
const loader = process.features.typescript ? [] : ['--import', 'tsx'];
// TAP as the run goes, then the failing tests again at the very end, where a log cut short keeps them.
const reporters = ['tap', fileURLToPath(new URL('./failed-tests-reporter.mjs', import.meta.url))].flatMap((r) => [`--test-reporter=${r}`, '--test-reporter-destination=stdout']);
const result = spawnSync(process.execPath, [...loader, '--test', '--test-concurrency=2', ...reporters, ...extra, ...files], {
  stdio: 'inherit',
});
process.exit(result.status ?? 1);
