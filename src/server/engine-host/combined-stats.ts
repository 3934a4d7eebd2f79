import type { EngineStats } from '../../engine/llm-engine.ts';
import type { SpeculationStats } from '../../engine/outputs.ts';

/** One replica's latest stats, and whether it still serves. */
export interface ReplicaStats {
  alive: boolean;
  stats: EngineStats;
}

/**
 * The stats of several engine replicas as one engine's: what they hold now (requests, KV blocks,
 * host blocks) summed over the live ones, since a dead replica's pool is gone; totals since start
 * summed over all of them, a dead one's as it last reported them, so that counters never go back.
 */
export function combinedStats(replicas: readonly ReplicaStats[]): EngineStats {
  const all = replicas.map((r) => r.stats);
  const live = replicas.filter((r) => r.alive).map((r) => r.stats);
  const sum = (list: EngineStats[], read: (s: EngineStats) => number) => list.reduce((total, s) => total + read(s), 0);
  const promptTokensTotal = sum(all, (s) => s.promptTokensTotal);
  const deviceCachedPromptTokensTotal = sum(all, (s) => s.deviceCachedPromptTokensTotal);
  const hostCachedPromptTokensTotal = sum(all, (s) => s.hostCachedPromptTokensTotal);
  return {
    numRunning: sum(live, (s) => s.numRunning),
    numWaiting: sum(live, (s) => s.numWaiting),
    numKvBlocks: sum(live, (s) => s.numKvBlocks),
    numFreeKvBlocks: sum(live, (s) => s.numFreeKvBlocks),
    numCachedKvBlocks: sum(live, (s) => s.numCachedKvBlocks),
    numStateSlots: sum(live, (s) => s.numStateSlots),
    numFreeStateSlots: sum(live, (s) => s.numFreeStateSlots),
    numStateCheckpoints: sum(live, (s) => s.numStateCheckpoints),
    prefixCacheHitRate: promptTokensTotal === 0 ? 0 : (deviceCachedPromptTokensTotal + hostCachedPromptTokensTotal) / promptTokensTotal,
    deviceCachedPromptTokensTotal,
    hostCachedPromptTokensTotal,
    numHostCacheBlocks: sum(live, (s) => s.numHostCacheBlocks),
    numHostCachedBlocks: sum(live, (s) => s.numHostCachedBlocks),
    promptTokensTotal,
    generationTokensTotal: sum(all, (s) => s.generationTokensTotal),
    numPreemptionsTotal: sum(all, (s) => s.numPreemptionsTotal),
    numSwapsTotal: sum(all, (s) => s.numSwapsTotal),
    numSwapped: sum(live, (s) => s.numSwapped),
    numSwapBlocks: sum(live, (s) => s.numSwapBlocks),
    numFreeSwapBlocks: sum(live, (s) => s.numFreeSwapBlocks),
    speculation: combinedSpeculation(all.flatMap((s) => (s.speculation === null ? [] : [s.speculation]))),
    runningLoraAdapters: [...new Set(live.flatMap((s) => s.runningLoraAdapters))],
    waitingLoraAdapters: [...new Set(live.flatMap((s) => s.waitingLoraAdapters))],
  };
}

function combinedSpeculation(parts: SpeculationStats[]): SpeculationStats | null {
  if (parts.length === 0) return null;
  const positions = Math.max(...parts.map((p) => p.draftTokensByPosition.length));
  const byPosition = (read: (p: SpeculationStats) => number[]) => Array.from({ length: positions }, (_, i) => parts.reduce((total, p) => total + (read(p)[i] ?? 0), 0));
  const drafted = byPosition((p) => p.draftTokensByPosition);
  const accepted = byPosition((p) => p.acceptedTokensByPosition);
  const numSteps = parts.reduce((total, p) => total + p.numSteps, 0);
  const numDraftTokens = parts.reduce((total, p) => total + p.numDraftTokens, 0);
  const numAcceptedTokens = parts.reduce((total, p) => total + p.numAcceptedTokens, 0);
  return {
    numSteps,
    numDraftTokens,
    numAcceptedTokens,
    acceptanceRate: numDraftTokens === 0 ? null : numAcceptedTokens / numDraftTokens,
    meanAcceptedLength: numSteps === 0 ? null : 1 + numAcceptedTokens / numSteps,
    draftTokensByPosition: drafted,
    acceptedTokensByPosition: accepted,
    acceptanceRateByPosition: drafted.map((n, i) => accepted[i] / n),
  };
}
