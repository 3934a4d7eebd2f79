/** Element types of checkpoint tensors Keel reads as numbers. */
export type WeightDType = 'f32' | 'f16' | 'bf16';

/** Checkpoint bytes as read from a file: little-endian, row-major. */
export interface HostTensor {
  dtype: WeightDType;
  shape: number[];
  data: Uint8Array;
}
