import type { HostTensor, Tensor } from '../../src/backend/backend.ts';
import type { WeightUploader } from '../../src/model/load-llama-weights.ts';

/** A backend stand-in that keeps the host tensors it is asked to upload. */
export class RecordingUploader implements WeightUploader {
  readonly uploaded: HostTensor[] = [];

  loadWeight(t: HostTensor): Tensor {
    this.uploaded.push(t);
    const tensor: RecordedTensor = { shape: t.shape, host: t };
    return tensor;
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
