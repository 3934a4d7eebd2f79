import type { SelectiveScanParams } from '../../backend.ts';
import type { CudaDevice } from '../cuda-device.ts';
import type { DevicePtr } from '../driver-api.ts';
import type { StateSlotArgs } from './gated-delta-net.ts';

const THREADS = 128;

/** The per-head constants of selectiveScan, float32 [numHeads] each. */
export interface SelectiveScanConstants {
  aLog: DevicePtr;
  dtBias: DevicePtr;
  d: DevicePtr;
}

/** Mamba-2's selective scan over each sequence's chunk from its slot's state: out [tokens, H · P]. */
export function launchSelectiveScan(device: CudaDevice, out: DevicePtr, xbc: DevicePtr, dt: DevicePtr, z: DevicePtr, constants: SelectiveScanConstants, slots: StateSlotArgs, convElements: number, params: SelectiveScanParams): void {
  if (slots.numSeqs === 0) return;
  const kernel = device.kernel('selective-scan.cu', 'selective_scan_kernel', 'pppppppppppiiiiiiff');
  device.launch(kernel, [slots.numSeqs, params.numHeads], [THREADS], 2 * params.stateSize * 4, [
    out,
    xbc,
    dt,
    z,
    constants.aLog,
    constants.dtBias,
    constants.d,
    slots.state,
    slots.queryStartLoc,
    slots.seqLens,
    slots.stateSlots,
    slots.slotStride,
    convElements,
    params.numHeads,
    params.headDim,
    params.numGroups,
    params.stateSize,
    params.dtMin,
    params.dtMax,
  ]);
}
