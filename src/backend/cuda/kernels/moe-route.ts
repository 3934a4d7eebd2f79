import type { ExpertRouting, RoutingParams } from '../../backend.ts';
import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';

/** Steps of at most this many tokens run the experts as GEMVs (moe-gemv.cu), larger ones as grouped GEMMs (moe-gemm.cu). */
export const GEMV_MAX_TOKENS = 8;
/** The route kernel keeps the experts in registers (32 per lane at most) and its grouping in shared memory. */
export const MAX_ROUTED_EXPERTS = 1024;
/** Lanes of one warp hold the chosen experts; group scores are one per lane too. */
export const MAX_TOP_K = 32;
export const MAX_EXPERT_GROUPS = 32;
const WARPS = 8;

/**
 * Pairs (token, slot) per tile of the expert kernels, fixed by the step's shape: on the GEMV path
 * every pair of an active expert in one tile (an expert gets at most one pair per token); on the
 * GEMM path the tile rows that fit the average pairs per expert, from 16 (decode batches, where a
 * tile is mostly padding and its weight reads are what count) to 128 (long prefills).
 */
export function expertTileRows(numTokens: number, topK: number, numExperts: number): number {
  if (numTokens <= GEMV_MAX_TOKENS) return Math.max(1, numTokens);
  const perExpert = (numTokens * topK) / numExperts;
  return perExpert <= 16 ? 16 : perExpert <= 32 ? 32 : perExpert <= 64 ? 64 : 128;
}

/** Tiles `experts` experts may need for `pairs` pairs: Σ ceil(c_e / rows) ≤ ceil(pairs / rows) + (experts with a pair). */
export function tileCapacity(pairs: number, tileRows: number, experts: number): number {
  return Math.ceil(pairs / tileRows) + Math.min(experts, pairs);
}

/** The router's output on the device (int32 unless noted), valid until the next beginStep. */
export interface RoutingBuffers {
  /** [tokens, topK] expert ids in increasing order, and their f32 weights. */
  ids: DevicePtr;
  weights: DevicePtr;
  /** [numExperts + 1]: where each expert's run of pairs starts in the expert-sorted order. */
  offsets: DevicePtr;
  /** [numExperts + 1]: each expert's first tile. */
  tileStart: DevicePtr;
  /** [tile capacity, 2]: each tile's expert and first place. */
  tiles: DevicePtr;
  /** [pairs]: the pair (token * topK + slot) at each place, and each pair's place. */
  sortedPairs: DevicePtr;
  pairPos: DevicePtr;
}

/** The CUDA backend's ExpertRouting. */
export class CudaExpertRouting implements ExpertRouting {
  readonly numTokens: number;
  readonly topK: number;
  readonly numExperts: number;
  /** Pairs per tile, chosen from the step's shape (expertTileRows). */
  readonly tileRows: number;
  readonly buffers: RoutingBuffers;
  /** The weights scale the experts' inputs, not their outputs (RoutingParams.weightInputs: Llama 4). */
  readonly weightInputs: boolean;

  constructor(numTokens: number, topK: number, numExperts: number, tileRows: number, buffers: RoutingBuffers, weightInputs: boolean) {
    this.numTokens = numTokens;
    this.topK = topK;
    this.numExperts = numExperts;
    this.tileRows = tileRows;
    this.buffers = buffers;
    this.weightInputs = weightInputs;
  }
}

export interface RouteArgs {
  /** [numTokens, numExperts], bf16 or f32. */
  logits: DevicePtr;
  logitsF32: boolean;
  /** [numExperts] selection bias, or 0 for none. */
  bias: DevicePtr;
  biasDtype: 'bf16' | 'f32' | null;
  numTokens: number;
  numExperts: number;
  params: Omit<RoutingParams, 'selectionBias'>;
  /** A zeroed uint32 the kernel leaves zeroed, its completion counter (CudaDevice.arrivalCounters). */
  done: DevicePtr;
  /** Step-lifetime device memory. */
  alloc: (bytes: number) => DevicePtr;
}

const SCORING = { softmax: 0, sigmoid: 1, 'topk-softmax': 2 } as const;

/**
 * The PER_LANE build of the routing code (moe-route.cuh) for `numExperts`: experts per lane,
 * rounded up to a power of two so that few builds serve every expert count.
 */
export function expertsPerLane(numExperts: number): number {
  return 2 ** Math.ceil(Math.log2(Math.ceil(numExperts / 32)));
}

/**
 * RouteRule's fields (moe-route.cuh) but the logits' dtype, in kernel-argument order: scoring,
 * bias kind, group score, groups, kept groups, normalize, scale, logit soft-cap (0: none).
 */
export function routeRuleArgs(params: Omit<RoutingParams, 'selectionBias'>, biasDtype: 'bf16' | 'f32' | null): number[] {
  const { groups } = params;
  return [
    SCORING[params.scoring],
    biasDtype === null ? 0 : biasDtype === 'bf16' ? 1 : 2,
    groups === null ? 0 : groups.score === 'max' ? 1 : 2,
    groups?.numGroups ?? 1,
    groups?.topkGroups ?? 1,
    params.normalize ? 1 : 0,
    params.scale,
    params.logitSoftcap ?? 0,
  ];
}

/** Routes every token and groups the pairs by expert, in one launch (none for a step of no tokens). */
export function launchRouteExperts(device: CudaDevice, a: RouteArgs): CudaExpertRouting {
  const { numTokens, numExperts, params } = a;
  const { topK } = params;
  const pairs = numTokens * topK;
  const tileRows = expertTileRows(numTokens, topK, numExperts);
  const buffers: RoutingBuffers = {
    ids: a.alloc(4 * pairs),
    weights: a.alloc(4 * pairs),
    offsets: a.alloc(4 * (numExperts + 1)),
    tileStart: a.alloc(4 * (numExperts + 1)),
    tiles: a.alloc(8 * tileCapacity(pairs, tileRows, numExperts)),
    sortedPairs: a.alloc(4 * pairs),
    pairPos: a.alloc(4 * pairs),
  };
  const kernel = device.kernel('moe-route.cu', 'moe_route_kernel', 'ppppppppppiiiiiiiiiiffi', { PER_LANE: expertsPerLane(numExperts) });
  const b = buffers;
  const weightInputs = params.weightInputs ?? false;
  if (numTokens === 0) return new CudaExpertRouting(0, topK, numExperts, tileRows, buffers, weightInputs);
  device.launch(kernel, [Math.ceil(numTokens / WARPS)], [32 * WARPS], 0, [
    a.logits,
    a.bias,
    b.ids,
    b.weights,
    b.offsets,
    b.tileStart,
    b.tiles,
    b.sortedPairs,
    b.pairPos,
    a.done,
    numTokens,
    numExperts,
    topK,
    a.logitsF32 ? 1 : 0,
    ...routeRuleArgs(params, a.biasDtype),
    tileRows,
  ]);
  return new CudaExpertRouting(numTokens, topK, numExperts, tileRows, buffers, weightInputs);
}
