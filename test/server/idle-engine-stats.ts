import type { EngineStats } from '../../src/engine/llm-engine.ts';

/** An idle engine's stats over `numKvBlocks` free blocks, with `overrides`: metric tests state only what they read. */
export function idleEngineStats(numKvBlocks: number, overrides: Partial<EngineStats> = {}): EngineStats {
  return {
    numRunning: 0,
    numWaiting: 0,
    numKvBlocks,
    numFreeKvBlocks: numKvBlocks,
    numCachedKvBlocks: 0,
    numStateSlots: 0,
    numFreeStateSlots: 0,
    numStateCheckpoints: 0,
    prefixCacheHitRate: 0,
    deviceCachedPromptTokensTotal: 0,
    hostCachedPromptTokensTotal: 0,
    numHostCacheBlocks: 0,
    numHostCachedBlocks: 0,
    promptTokensTotal: 0,
    generationTokensTotal: 0,
    numPreemptionsTotal: 0,
    numSwapsTotal: 0,
    numSwapped: 0,
    numSwapBlocks: 0,
    numFreeSwapBlocks: 0,
    speculation: null,
    runningLoraAdapters: [],
    waitingLoraAdapters: [],
    ...overrides,
  };
}
