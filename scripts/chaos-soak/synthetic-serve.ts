// `keel serve` over the synthetic engine (synthetic-engine.ts): the same server, flags and
// shutdown, with tokens made up at a set rate instead of computed. For the chaos soak's
// --synthetic-tokens-per-s: the load a GPU puts on the server's event loop, without a GPU.
// Usage: synthetic-serve.ts TOKENS_PER_S [keel serve flags...]
import { serveCommand } from '../../src/cli/serve.ts';
import { TOKENS_PER_S_ENV } from './synthetic-engine-thread.ts';

const [rate, ...serveArgs] = process.argv.slice(2);
if (!(Number(rate) > 0)) {
  console.error(`synthetic-serve: the first argument is the token rate per second (got ${rate})`);
  process.exit(2);
}
// Worker threads take a copy of the environment as it is when they start.
process.env[TOKENS_PER_S_ENV] = rate;
process.exitCode = await serveCommand(serveArgs, new URL('./synthetic-engine-thread.ts', import.meta.url));
