import type { QuantizedWeight } from '../../tensor/quantized-weight.ts';

/**
 * How one checkpoint format's quantized linear layers are read. `base` is a layer's weight name
 * less `.weight` (`model.layers.0.self_attn.q_proj`).
 */
export interface QuantizedLayerReader {
  /** Whether the checkpoint holds this layer quantized (else it has a 16-bit `.weight`). */
  holds(base: string): boolean;
  /** The layer's [out, in], from tensor headers alone. */
  shape(base: string): [number, number];
  /** The layer's weight repacked in Keel's layout. */
  read(base: string): QuantizedWeight;
}
