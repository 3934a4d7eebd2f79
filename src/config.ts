import type { BackendChoice } from './backend/select-backend.ts';

/**
 * The one typed engine configuration, with every default in `DEFAULT_ENGINE_CONFIG`. CLI flags
 * map onto these fields one-to-one (`--max-num-seqs` -> maxNumSeqs).
 */
export interface EngineConfig {
  /**
   * A model directory in Hugging Face layout, or a Hugging Face repo id ORG/NAME[@REVISION] (found
   * in the Hugging Face cache, or downloaded into it). Defaults to the embedded model.
   */
  model: string;
  /** `auto` picks CUDA when a GPU and its libraries are found, else the CPU backend. */
  backend: BackendChoice;
  /** `dummy` fills the architecture from config.json with random weights (benchmarks). */
  loadFormat: 'auto' | 'dummy';
  /** Tokens per KV-cache block. */
  blockSize: number;
  /** KV blocks in the pool; null sizes it from memory (gpuMemoryUtilization or cpuKvCacheBytes). */
  numKvBlocks: number | null;
  /** Fraction of GPU memory Keel may use for weights, activations and the KV pool. */
  gpuMemoryUtilization: number;
  /** KV pool size on the CPU backend when numKvBlocks is null. */
  cpuKvCacheBytes: number;
  /** Longest sequence (prompt + output); null means the model's max_position_embeddings. */
  maxModelLen: number | null;
  /** Most sequences in one step. */
  maxNumSeqs: number;
  /** Token budget of one step: decodes plus prefill chunks. */
  maxNumBatchedTokens: number;
  enablePrefixCaching: boolean;
  /** Run every step op by op; otherwise decode steps replay recorded CUDA graphs (CUDA backend). */
  enforceEager: boolean;
  /**
   * Schedule and launch step N+1 before reading step N's sampled tokens, so the GPU never waits
   * for the host; a step whose tokens the host must see first (forks, a known last token) still waits.
   */
  asyncScheduling: boolean;
  /** Seed for requests that bring none. */
  seed: number;
  /** Show a progress bar while loading weights (on a terminal) and report the KV pool on stderr. */
  showProgress: boolean;
}

export const DEFAULT_ENGINE_CONFIG: Omit<EngineConfig, 'model'> = {
  backend: 'auto',
  loadFormat: 'auto',
  blockSize: 16,
  numKvBlocks: null,
  gpuMemoryUtilization: 0.9,
  cpuKvCacheBytes: 512 * 1024 * 1024,
  maxModelLen: null,
  maxNumSeqs: 256,
  maxNumBatchedTokens: 2048,
  enablePrefixCaching: true,
  enforceEager: false,
  asyncScheduling: true,
  seed: 0,
  showProgress: true,
};
