import { isAbsolute, relative, resolve, basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_ENGINE_CONFIG, type EngineOptions } from '../config.ts';
import { LLM } from '../engine/llm.ts';
import { probeBackend, type BackendFacts } from './backend-probe.ts';
import type { BenchResult, ModelInfo } from './result-schema.ts';
import { parameterCount, type RooflineInputs } from './roofline.ts';
import { collectEnvironment, type RunEnvironment } from './run-environment.ts';
import { resolveKvCacheDtype } from '../step/kv-cache-layout.ts';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** What a benchmark measures of its backend before loading (probeBackend): memory bandwidth (`gbps`: as given), matmul rate, host-to-device rate. */
export interface BackendMeasures {
  bandwidth: boolean;
  gbps?: number;
  matmul?: boolean;
  hostToDevice?: boolean;
}

export interface BenchEngine {
  llm: LLM;
  facts: BackendFacts;
}

/** What the rooflines count a loaded engine's steps by: its loaded model, the backend's element sizes, the cache's dtype and blocks. */
export function rooflineInputs({ llm, facts }: BenchEngine): RooflineInputs {
  return { model: llm.model, weightElementBytes: facts.weightElementBytes, kvElementBytes: facts.kvElementBytes, kvCacheDtype: resolveKvCacheDtype(llm.config.kvCacheDtype), blockSize: llm.config.blockSize };
}

/**
 * Loads the model a Keel benchmark runs on. The backend is probed first (device name, memory
 * bandwidth, matmul rate) and then named to the engine, so `--backend auto` resolves once.
 */
export async function loadBenchEngine(engine: EngineOptions, measure: BackendMeasures): Promise<BenchEngine> {
  const facts = await probeBenchBackend(engine, measure);
  const llm = await LLM.load({ ...engine, backend: facts.backend });
  return { llm, facts };
}

/** The facts of the backend a benchmark's engine options name (`--backend auto` resolved), for loading on it. */
export function probeBenchBackend(engine: EngineOptions, measure: BackendMeasures): Promise<BackendFacts> {
  return probeBackend(engine.backend ?? DEFAULT_ENGINE_CONFIG.backend, {
    measureBandwidth: measure.bandwidth,
    bandwidthGbps: measure.gbps,
    measureMatmul: measure.matmul,
    measureHostToDevice: measure.hostToDevice,
  });
}

/** What a result says of the model: an engine's, or a model loaded without one (`loadModel`). */
type LoadedParts = Pick<LLM, 'config' | 'modelConfig' | 'model'>;

/** The parts of a Keel result that describe the run rather than its figures. */
export function keelRunHeader({ llm, facts }: { llm: LoadedParts; facts: BackendFacts }): RunEnvironment & Pick<BenchResult, 'engine' | 'model'> {
  return {
    engine: 'keel',
    ...collectEnvironment({ backend: facts.backend, name: facts.deviceName, cuda_version: facts.cudaVersion }),
    model: modelInfo(llm),
  };
}

/** The engine's settings as they were resolved, for a result's config. */
export function engineSettings(llm: LLM): Record<string, unknown> {
  const { speculative } = llm.config;
  return {
    ...llm.config,
    model: repoRelative(llm.config.model),
    speculative: speculative && { ...speculative, model: speculative.model && repoRelative(speculative.model) },
    max_model_len: llm.maxModelLen,
    num_kv_blocks: llm.stats().numKvBlocks,
  };
}

function modelInfo(llm: LoadedParts): ModelInfo {
  return {
    name: basename(resolve(llm.config.model)),
    path: repoRelative(llm.config.model),
    model_type: llm.modelConfig.modelType,
    parameter_count: parameterCount(llm.model),
    load_format: llm.config.loadFormat,
    dtype: llm.modelConfig.dtype,
  };
}

/** A path inside Keel's checkout as it is written in the repo; others as given. */
export function repoRelative(path: string): string {
  const inside = relative(REPO_ROOT, resolve(path));
  return inside.startsWith('..') || isAbsolute(inside) ? path : inside;
}
