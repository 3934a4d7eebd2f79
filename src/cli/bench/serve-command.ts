import { basename } from 'node:path';
import { ENGINE_FLAGS, ENGINE_FLAGS_HELP, engineConfigFromFlags, integerFlag } from '../engine-flags.ts';
import { DEFAULT_ENGINE_CONFIG } from '../../config.ts';
import { DEFAULT_MODEL_DIR } from '../../engine/load-engine.ts';
import { invalidArgument } from '../../errors.ts';
import { locateModel } from '../../model-source/locate-model.ts';
import { openModelFiles } from '../../checkpoint/model-files.ts';
import { loadTokenizerIfPresent, type Tokenizer } from '../../tokenizer/tokenizer.ts';
import { createModel, readModelArchitecture } from '../../models/registry.ts';
import { serveReport } from '../../bench/console-report.ts';
import { engineSettings, keelRunHeader, loadBenchEngine, repoRelative } from '../../bench/keel-run.ts';
import { writeResult } from '../../bench/result-file.ts';
import { RESULT_SCHEMA_VERSION, type BenchResult } from '../../bench/result-schema.ts';
import { parameterCount } from '../../bench/roofline.ts';
import { collectEnvironment } from '../../bench/run-environment.ts';
import { multiTurnConversations } from '../../bench/multi-turn-dataset.ts';
import { runMultiTurnSuite, runServeSuite } from '../../bench/serve-suite.ts';
import { scrapeServerCounters } from '../../bench/server-counters.ts';
import { benchProgress } from '../../bench/progress.ts';
import { discoverServer, loopbackBaseUrl, type DiscoveredServer } from '../../bench/serve-target.ts';
import {
  DATASET_FLAGS,
  DATASET_FLAGS_HELP,
  MULTI_TURN_FLAGS,
  MULTI_TURN_FLAGS_HELP,
  multiTurnFromFlags,
  requestRateFlag,
  workloadConfig,
  workloadFromFlags,
  workloadRequests,
  type MultiTurnWorkload,
} from './bench-flags.ts';
import { parseFlags } from '../parse-flags.ts';

const DEFAULT_BASE_URL = 'http://127.0.0.1:8000';

export const SERVE_BENCH_HELP = `Usage: keel bench serve [options]

Online serving, as \`vllm bench serve\` measures it: streamed /v1/completions requests with
token-id prompts (greedy, EOS ignored) arrive as a Poisson process of --request-rate per second
(inf: all at once), at most --max-concurrency in flight. Reports per-request TTFT, TPOT, ITL and
end-to-end latency (mean, median, p90, p99), request and token throughput, duration, completed
and failed requests; against a Keel server also its own figures over the run, from its /metrics
(server_metrics: prefix-cache hit rates, preemptions and swaps, speculative decoding's acceptance).
Writes JSON to ./bench-results/ (or --output).

  --base-url URL                 a running keel serve, on this machine (default ${DEFAULT_BASE_URL})
  --launch                       start a server in this process instead, with the engine options
  --api-key KEY                  the server's API key (default: env KEEL_API_KEY)
  --request-rate R               requests per second, or inf (default inf)
  --max-concurrency N            most requests in flight (default: no limit)
  --output FILE                  where to write the JSON result

${DATASET_FLAGS_HELP}

${MULTI_TURN_FLAGS_HELP}

Without --launch, --model names the served model's directory (for its vocabulary size; default
the embedded keel-tiny), --seed the dataset's seed and --no-progress hides the progress; the
other engine options need --launch.

${ENGINE_FLAGS_HELP}`;

export async function serveBenchCommand(argv: string[]): Promise<void> {
  const { values } = parseFlags('keel bench serve', {
    args: argv,
    options: {
      ...ENGINE_FLAGS,
      ...DATASET_FLAGS,
      ...MULTI_TURN_FLAGS,
      'base-url': { type: 'string' },
      launch: { type: 'boolean' },
      'api-key': { type: 'string' },
      'request-rate': { type: 'string' },
      'max-concurrency': { type: 'string' },
      output: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(SERVE_BENCH_HELP);
    return;
  }
  if (values.launch && values['base-url'] !== undefined) throw invalidArgument('give --base-url or --launch, not both');
  const engineOnly = Object.keys(ENGINE_FLAGS).filter((k) => !['model', 'seed', 'no-progress'].includes(k) && values[k as keyof typeof ENGINE_FLAGS] !== undefined);
  if (!values.launch && engineOnly.length > 0) throw invalidArgument(`--${engineOnly.join(', --')} configure a launched engine: add --launch`);
  const requestRate = requestRateFlag(values['request-rate']);
  const maxConcurrency = integerFlag('--max-concurrency', values['max-concurrency']) ?? null;
  if (maxConcurrency !== null && maxConcurrency < 1) throw invalidArgument(`--max-concurrency must be positive (got ${maxConcurrency})`);
  const multiTurn = values.dataset === 'multi-turn' ? multiTurnFromFlags(values) : null;
  const multiTurnOnly = Object.keys(MULTI_TURN_FLAGS).filter((k) => values[k as keyof typeof MULTI_TURN_FLAGS] !== undefined);
  if (multiTurn === null && multiTurnOnly.length > 0) throw invalidArgument(`--${multiTurnOnly.join(', --')} describe --dataset multi-turn`);
  const workload = multiTurn === null ? workloadFromFlags(values, undefined, 0) : null;
  const apiKey = values['api-key'] ?? process.env.KEEL_API_KEY ?? null;
  const engineConfig = engineConfigFromFlags(values);
  const seed = engineConfig.seed ?? DEFAULT_ENGINE_CONFIG.seed;

  if (values.launch) {
    const bench = await loadBenchEngine(engineConfig, { bandwidth: false });
    try {
      const { startServer } = await import('../../server/server.ts');
      const { EngineClient } = await import('../../server/engine-host/engine-client.ts');
      const { EngineReplicas } = await import('../../server/engine-host/engine-replicas.ts');
      const engine = new EngineReplicas([await EngineClient.inThisThread(bench.llm)]);
      const server = await startServer({ engine, host: '127.0.0.1', port: 0, apiKey: null, logLevel: 'warn', maxQueuedSequences: null, maxQueuedTokens: null });
      try {
        const discovered = await discoverServer(server.url, null);
        const header = { ...keelRunHeader(bench), config: { server: 'launched', engine: engineSettings(bench.llm) } };
        await run(discovered, header, bench.llm.modelConfig.vocabSize, bench.llm.tokenizer);
      } finally {
        await server.close();
        await engine.close();
      }
    } finally {
      await bench.llm.close();
    }
    return;
  }
  const baseUrl = loopbackBaseUrl(values['base-url'] ?? DEFAULT_BASE_URL);
  const modelDir = values.model ?? DEFAULT_MODEL_DIR;
  const located = await locateModel(modelDir, { showProgress: engineConfig.showProgress ?? true });
  const architecture = readModelArchitecture(located.path);
  const modelConfig = architecture.config;
  const discovered = await discoverServer(baseUrl, apiKey);
  const header = {
    engine: discovered.ownedBy ?? 'unknown',
    ...collectEnvironment({ backend: null, name: null, cuda_version: null }),
    model: {
      name: basename(modelDir),
      path: repoRelative(modelDir),
      model_type: modelConfig.modelType,
      parameter_count: parameterCount(createModel(architecture, modelConfig.contextLength)),
      load_format: 'unknown',
      dtype: modelConfig.dtype,
    },
    config: { server: baseUrl },
  };
  // Only a custom dataset needs the tokenizer (its text prompts become token ids here).
  const tokenizer = workload?.kind === 'custom' ? loadTokenizerIfPresent(openModelFiles(located.path)) : null;
  await run(discovered, header, modelConfig.vocabSize, tokenizer);

  async function run(server: DiscoveredServer, header: Omit<BenchResult, 'suite' | 'schema_version' | 'status' | 'error' | 'results'>, vocabSize: number, tokenizer: Tokenizer | null) {
    const rate = requestRate === Infinity ? 'inf' : `${requestRate}/s`;
    const limit = maxConcurrency ? `, at most ${maxConcurrency} at once` : '';
    const { target } = server;
    const serverCounters = () => scrapeServerCounters(target.baseUrl, target.apiKey);
    let results;
    if (multiTurn !== null) {
      const conversations = multiTurnConversations({ ...multiTurn, vocabSize, seed });
      const numRequests = multiTurn.numConversations * multiTurn.numTurns;
      console.log(`keel bench serve: ${multiTurn.numConversations} conversations of ${multiTurn.numTurns} turns to ${target.baseUrl} (model ${target.model}), started at ${rate}${limit}`);
      const progress = benchProgress('requests', numRequests, 'done', engineConfig.showProgress ?? true);
      results = await runMultiTurnSuite(target, { conversations, requestRate, maxConcurrency, seed, serverCounters, onRequestDone: () => progress.tick() });
      progress.stop();
    } else {
      const requests = workloadRequests(workload!, vocabSize, seed, tokenizer);
      console.log(`keel bench serve: ${requests.length} requests to ${target.baseUrl} (model ${target.model}) at ${rate}${limit}`);
      const progress = benchProgress('requests', requests.length, 'done', engineConfig.showProgress ?? true);
      results = await runServeSuite(target, { requests, requestRate, maxConcurrency, seed, serverCounters, onRequestDone: () => progress.tick() });
      progress.stop();
    }
    console.log(serveReport(results));
    const path = writeResult(
      {
        ...header,
        suite: 'serve',
        schema_version: RESULT_SCHEMA_VERSION,
        status: 'ok',
        error: null,
        config: { ...header.config, ...(multiTurn === null ? workloadConfig(workload!) : multiTurnConfig(multiTurn)), request_rate: rate, max_concurrency: maxConcurrency, seed, model_name: server.target.model },
        results,
      },
      values.output,
    );
    console.log(`wrote ${path}`);
  }
}

function multiTurnConfig(workload: MultiTurnWorkload): Record<string, unknown> {
  const { numConversations, numTurns, inputLen, turnLen, outputLen } = workload;
  return { dataset: 'multi-turn', num_conversations: numConversations, num_turns: numTurns, input_len: inputLen, turn_len: turnLen, output_len: outputLen, temperature: 0, ignore_eos: true };
}
