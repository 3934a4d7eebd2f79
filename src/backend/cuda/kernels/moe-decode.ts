import type { Activation, RoutingParams } from '../../backend.ts';
import type { CudaDevice, Kernel } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import { activationDefines } from './activation.ts';
import { expertsPerLane, routeRuleArgs } from './moe-route.ts';

const THREADS = 256;
/**
 * Blocks per multiprocessor: 16 warps each with 16 weight loads of 512 bytes in flight keep ~128
 * KB per SM outstanding, several times what 4.8 TB/s needs over a microsecond of latency; more
 * blocks would only add arrivals at the grid barriers. The kernel's launch bounds promise 2 fit.
 */
const BLOCKS_PER_SM = 2;
/** Lane groups of an output row (moe-decode.cu's MAX_SEGMENTS): routed slots plus the shared expert's n-wide pieces. */
const MAX_SEGMENTS = 32;

/** The shape of a single-token MoE block, as moe_decode_kernel takes it. */
export interface MoeDecodeShape {
  hidden: number;
  /** Each routed expert's intermediate width. */
  n: number;
  /** The shared expert's intermediate width; 0 for none. */
  m: number;
  numExperts: number;
  topK: number;
  activation: Activation;
  /** The routed experts are MXFP4 (then m = 0, and hidden and n are multiples of 32). */
  mxfp4: boolean;
}

export interface MoeDecodeArgs extends MoeDecodeShape {
  /** [hidden], written. */
  out: DevicePtr;
  /** [hidden]. */
  x: DevicePtr;
  /** [numExperts, hidden], and its bias [numExperts] or 0. */
  router: DevicePtr;
  routerBias: DevicePtr;
  /** [numExperts] in `selectionBiasDtype`, or 0. */
  selectionBias: DevicePtr;
  selectionBiasDtype: 'bf16' | 'f32' | null;
  routing: Omit<RoutingParams, 'selectionBias'>;
  first: number;
  count: number;
  /** [count, 2n, hidden], [count, hidden, n] (MXFP4: the blocks, with their scale codes; else scales 0); biases [count, 2n] and [count, hidden], or 0. */
  gateUp: DevicePtr;
  down: DevicePtr;
  gateUpScales: DevicePtr;
  downScales: DevicePtr;
  gateUpBias: DevicePtr;
  downBias: DevicePtr;
  /** [2m, hidden], [hidden, m] and the gate [1, hidden], or 0. */
  sharedGateUp: DevicePtr;
  sharedDown: DevicePtr;
  sharedGate: DevicePtr;
  /** Two uint32 counters, zero, that the launch leaves zero (CudaDevice.arrivalCounters). */
  sync: DevicePtr;
  /** Step-lifetime device memory. */
  alloc: (bytes: number) => DevicePtr;
}

function decodeKernel(device: CudaDevice, s: MoeDecodeShape): Kernel {
  const { ACT } = activationDefines(s.activation);
  return device.kernel('moe-decode.cu', 'moe_decode_kernel', 'pppppppppppppppppiiiiiiiiiiiiiffff', { PER_LANE: expertsPerLane(s.numExperts), ACT, MXFP4: s.mxfp4 ? 1 : 0 });
}

function sharedBytes(s: MoeDecodeShape): number {
  return 2 * (s.hidden + s.topK * s.n + s.m);
}

/**
 * The grid moe_decode_kernel would run with for this shape: every block resident at once, which
 * its grid barriers need; 0 when the shape does not fit it (too many lane groups per output row,
 * or too much shared memory), and the split path must run instead.
 */
export function moeDecodeBlocks(device: CudaDevice, s: MoeDecodeShape): number {
  const segments = s.topK + Math.ceil(s.m / s.n);
  if (segments > MAX_SEGMENTS) return 0;
  const resident = device.residentBlocks(decodeKernel(device, s), THREADS, sharedBytes(s));
  return Math.min(resident, BLOCKS_PER_SM * device.info.multiprocessorCount);
}

/** One launch for the whole block of a single token (moe-decode.cu); `blocks` from moeDecodeBlocks, at least 1. */
export function launchMoeDecode(device: CudaDevice, a: MoeDecodeArgs, blocks: number): void {
  const { alpha, limit } = activationDefines(a.activation);
  const logits = a.alloc(4 * (a.numExperts + 1));
  const h = a.alloc(2 * (a.topK * a.n + a.m));
  device.launch(decodeKernel(device, a), [blocks], [THREADS], sharedBytes(a), [
    a.out,
    a.x,
    a.router,
    a.routerBias,
    a.selectionBias,
    a.gateUp,
    a.down,
    a.gateUpScales,
    a.downScales,
    a.gateUpBias,
    a.downBias,
    a.sharedGateUp,
    a.sharedDown,
    a.sharedGate,
    logits,
    h,
    a.sync,
    a.hidden,
    a.n,
    a.m,
    a.numExperts,
    a.topK,
    a.first,
    a.count,
    ...routeRuleArgs(a.routing, a.selectionBiasDtype),
    alpha,
    limit,
  ]);
}
