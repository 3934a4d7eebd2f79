import type { RopeTable, Tensor } from '../../src/backend/backend.ts';
import type { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import type { WeightUploader } from '../../src/layers/parameters.ts';
import type { HostTensor } from '../../src/tensor/host-tensor.ts';
import type { Mxfp4Weight } from '../../src/tensor/mxfp4.ts';
import { describeQuantized, type QuantizedWeight } from '../../src/tensor/quantized-weight.ts';
import type { Sparse24Weight } from '../../src/tensor/sparse24.ts';

/** A backend stand-in that keeps the host tensors (and rotary tables) it is asked to upload. */
export class RecordingUploader implements WeightUploader {
  readonly uploaded: HostTensor[] = [];
  readonly mxfp4: Mxfp4Weight[] = [];
  readonly ropeTables: RopeTable[] = [];

  loadWeight(t: HostTensor): Tensor {
    this.uploaded.push(t);
    const tensor: RecordedTensor = { shape: t.shape, host: t };
    return tensor;
  }

  loadQuantizedWeight(w: QuantizedWeight): Tensor {
    throw new Error(`RecordingUploader keeps host tensors only, not a quantized weight (${describeQuantized(w)})`);
  }

  loadQuantizedExperts(w: QuantizedWeight, count: number): Tensor {
    throw new Error(`RecordingUploader keeps host tensors only, not ${count} quantized experts (${describeQuantized(w)})`);
  }

  loadSparseWeight(w: Sparse24Weight): Tensor {
    throw new Error(`RecordingUploader keeps host tensors only, not a 2:4 sparse weight [${w.rows}, ${w.cols}]`);
  }

  loadMxfp4Weight(w: Mxfp4Weight): Tensor {
    this.mxfp4.push(w);
    return { shape: w.shape };
  }

  uploadRopeTable(table: RopeTable): Tensor {
    this.ropeTables.push(table);
    return { shape: [table.maxPositions, table.rotaryDim / 2] };
  }
}

export interface RecordedTensor extends Tensor {
  host: HostTensor;
}

/** The host tensor a RecordingUploader received for `t`. */
export function hostOf(t: Tensor | null): HostTensor {
  if (t === null || !('host' in t)) throw new Error('not a tensor from RecordingUploader');
  return (t as RecordedTensor).host;
}

/** The CPU backend's uploads, with every quantized expert stack it loads kept in `stacks` as well. */
export function expertStackRecorder(backend: CpuBackend): { uploader: WeightUploader; stacks: QuantizedWeight[] } {
  const stacks: QuantizedWeight[] = [];
  const uploader: WeightUploader = {
    loadWeight: backend.loadWeight.bind(backend),
    loadSparseWeight: backend.loadSparseWeight.bind(backend),
    loadMxfp4Weight: backend.loadMxfp4Weight.bind(backend),
    uploadRopeTable: backend.uploadRopeTable.bind(backend),
    loadQuantizedWeight: backend.loadQuantizedWeight.bind(backend),
    loadQuantizedExperts: (w, count) => (stacks.push(w), backend.loadQuantizedExperts(w, count)),
  };
  return { uploader, stacks };
}
