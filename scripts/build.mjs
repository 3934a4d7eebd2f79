// Builds the published package into dist/: tsc compiles src/ to ESM JavaScript and .d.ts (imports
// of ./x.ts rewritten to ./x.js), and every file of src/ that is not TypeScript (the CUDA kernels,
// the playground's page, the worker boot module) is copied to the same place beside the compiled
// code, where the modules that read them look. Development and the GPU host run src/ as it is.
import { cpSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = `${root}dist`;
rmSync(dist, { recursive: true, force: true });
const result = spawnSync(`${root}node_modules/.bin/tsc`, ['-p', `${root}tsconfig.build.json`], { stdio: 'inherit' });
if (result.status !== 0) process.exit(result.status ?? 1);
cpSync(`${root}src`, dist, { recursive: true, filter: (path) => !path.endsWith('.ts') });
