#!/usr/bin/env bash
# Checks the package as a user gets it: packs the tarball (which builds dist/), checks what it
# holds and its size, installs it in an empty directory (its dependencies from the registry, or
# npm's cache where `npm ci` left them), and there: imports the library from an ESM file and
# generates, and `keel/server` and serves a completion; type-checks a TypeScript consumer under --module nodenext --strict; runs
# `npx keel --version`, `npx keel generate`, and `keel serve` long enough to answer a completion
# and serve the playground (worker threads and static files found beside the compiled code).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

npm pack --silent --pack-destination "$work" >/dev/null
tarball=$(ls "$work"/keel-*.tgz)
size=$(stat -c %s "$tarball")
echo "package: $(basename "$tarball"), $((size / 1024 / 1024)) MiB"
if [ "$size" -ge $((40 * 1024 * 1024)) ]; then echo "the tarball is over 40 MiB" >&2; exit 1; fi

contents=$(tar -tzf "$tarball")
for needed in package/LICENSE package/README.md package/bin/keel package/dist/index.js package/dist/index.d.ts \
  package/dist/threads/ts-worker-boot.mjs package/dist/server/playground/index.html package/dist/backend/cuda/kernels/common.cuh \
  package/models/keel-tiny/config.json package/models/keel-tiny/tokenizer.json; do
  grep -qx "$needed" <<<"$contents" || { echo "the tarball lacks $needed" >&2; exit 1; }
done
# Every kernel and asset of src/ ships beside the compiled code that reads it.
for asset in $(cd src && find . -type f ! -name '*.ts' | sed 's|^\./||'); do
  grep -qx "package/dist/$asset" <<<"$contents" || { echo "the tarball lacks dist/$asset" >&2; exit 1; }
done
if grep -E '^package/(src|test|tools|scripts|bench)/|\.test\.(js|d\.ts)$|/oracle\.json$' <<<"$contents"; then
  echo "the tarball holds tests or sources (above)" >&2; exit 1
fi

consumer="$work/consumer"
mkdir "$consumer"
cd "$consumer"
echo '{ "name": "keel-consumer", "private": true, "type": "module" }' > package.json
typescript=$(node -p "require('$root/package-lock.json').packages['node_modules/typescript'].version")
types_node=$(node -p "require('$root/package-lock.json').packages['node_modules/@types/node'].version")
npm install --no-audit --no-fund --prefer-offline "$tarball" "typescript@$typescript" "@types/node@$types_node" 2>&1 | tee install.log
if grep -q EBADENGINE install.log; then echo "npm warned EBADENGINE on Node $(node --version)" >&2; exit 1; fi

cat > generate.mjs <<'EOF'
import { LLM } from 'keel';

const llm = await LLM.load({ backend: 'cpu', showProgress: false });
const [out] = await llm.generate(['def add(a, b):'], { temperature: 0, maxTokens: 16 });
if (out.outputs[0].tokenIds.length === 0) throw new Error('no tokens generated');
console.log(JSON.stringify(out.outputs[0].text));
await llm.close();
EOF
node generate.mjs

cat > serve.mjs <<'EOF'
import { serve } from 'keel/server';

const server = await serve({ engine: { backend: 'cpu', showProgress: false }, server: { port: 0, logLevel: 'warn' } });
const response = await fetch(`${server.url}/v1/completions`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ prompt: 'def f(x):', max_tokens: 4, ignore_eos: true }),
});
const { usage } = await response.json();
if (usage.completion_tokens !== 4) throw new Error(`keel/server answered ${JSON.stringify(usage)}`);
const report = await server.close();
console.log(`keel/server: served ${server.model} at ${server.url}, closed (${report.cut} cut)`);
EOF
node serve.mjs

cat > consumer.ts <<'EOF'
import { DEFAULT_ENGINE_CONFIG, KeelError, LLM, type EngineConfig, type RequestOutput, type SamplingParams } from 'keel';
import { serve, type OpenAIServer, type ServeOptions } from 'keel/server';

const config: Partial<EngineConfig> = { ...DEFAULT_ENGINE_CONFIG, backend: 'cpu' };
const params: Partial<SamplingParams> = { temperature: 0, maxTokens: 8 };
const llm: LLM = await LLM.load(config);
const outputs: RequestOutput[] = await llm.generate(['x = '], params);
for await (const update of llm.stream('y = ', params)) process.stdout.write(update.deltas.map((d) => d.text).join(''));
console.log(outputs[0].outputs[0].text, KeelError.name);
await llm.close();
const serveOptions: ServeOptions = { engine: { backend: 'cpu' }, server: { port: 0 } };
const server: OpenAIServer = await serve(serveOptions);
await server.close({ timeoutMs: 1000 });
EOF
npx tsc --module nodenext --moduleResolution nodenext --target es2022 --strict --noEmit --types node consumer.ts
echo "TypeScript consumer: type-checks under --module nodenext --strict"

version=$(npx keel --version)
[ "$version" = "$(node -p "require('$root/package.json').version")" ] || { echo "keel --version printed $version" >&2; exit 1; }
npx keel generate --backend cpu --prompt 'def fibonacci(n):' --max-tokens 16 --temperature 0

port_file="$work/serve.log"
# The installed bin itself, not npx, so that the signal and the exit status are keel's.
node_modules/.bin/keel serve --backend cpu --no-progress --port 0 >"$port_file" 2>&1 &
serve_pid=$!
for _ in $(seq 1 120); do grep -q 'is serving' "$port_file" && break; sleep 0.5; done
url=$(grep -o 'http://[0-9.:]*' "$port_file" | head -1)
[ -n "$url" ] || { cat "$port_file" >&2; kill "$serve_pid"; exit 1; }
# Whole bodies first: `curl | grep -q` fails under pipefail when grep leaves before curl has written all.
page=$(curl -fsS "$url/")
grep -q '<title>Keel playground</title>' <<<"$page"
completion=$(curl -fsS "$url/v1/completions" -H 'content-type: application/json' -d '{"prompt": "def f(x):", "max_tokens": 4}')
grep -q '"completion_tokens":4' <<<"$completion"
kill -TERM "$serve_pid"
wait "$serve_pid"
echo "package checks passed"
