// Bundles npm packages, each into one minified ESM file, as `<out>/<name>/index.js` with a package.json
// that points at it, so that `import ... from '<name>'` resolves there unchanged. The GPU host's carry
// limit has no room for these packages' installed trees (see pack-gpu.sh).
//   node scripts/bundle-gpu-packages.mjs <out dir> <package>...
// Packages come from this checkout's node_modules (the lock file's versions, those the tests run with).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const [out, ...names] = process.argv.slice(2);
if (!out || names.length === 0) {
  console.error('usage: node scripts/bundle-gpu-packages.mjs <out dir> <package>...');
  process.exit(2);
}
// Where `import(name)` below resolves from too.
const nodeModules = fileURLToPath(new URL('../node_modules', import.meta.url));
const identifier = /^[A-Za-z_$][\w$]*$/;
// CommonJS code inside an ESM bundle still calls require() for node's built-ins, and a few packages
// read __dirname / __filename (pino's transports, say): give them what node gives CommonJS.
const banner = [
  "import { createRequire as __keelRequire } from 'node:module';",
  "import { fileURLToPath as __keelPath } from 'node:url';",
  'const require = __keelRequire(import.meta.url);',
  'const __filename = __keelPath(import.meta.url);',
  "const __dirname = __keelPath(new URL('.', import.meta.url));",
].join('\n');

const scratch = mkdtempSync(join(tmpdir(), 'keel-gpu-bundle-'));
try {
  for (const name of names) {
    // The names node itself offers an ESM importer of this package (for CommonJS, those that its
    // lexer finds), so the bundle exports what Keel's `import { x } from` may ask for.
    const exported = Object.keys(await import(name)).filter((key) => key === 'default' || identifier.test(key));
    const entry = join(scratch, `${name.replace('/', '__')}.mjs`);
    writeFileSync(entry, `export { ${exported.join(', ')} } from '${name}';\n`);
    const dir = join(out, name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    await build({
      entryPoints: [entry],
      outfile: join(dir, 'index.js'),
      nodePaths: [nodeModules],
      bundle: true,
      minify: true,
      format: 'esm',
      platform: 'node',
      target: 'node22',
      banner: { js: banner },
      legalComments: 'none',
      logLevel: 'error',
    });
    const { version } = JSON.parse(readFileSync(join(nodeModules, name, 'package.json'), 'utf8'));
    const manifest = { name, version, description: 'one-file bundle for the GPU host (scripts/bundle-gpu-packages.mjs)', type: 'module', main: 'index.js', exports: './index.js' };
    writeFileSync(join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
