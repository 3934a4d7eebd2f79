import type { Activation } from '../../backend.ts';

/** The activation's value for one gate/up pair: act(gate) * up, in float64. */
export function gatedValue(activation: Activation, gate: number, up: number): number {
  switch (activation.kind) {
    case 'silu':
      // exp(-g) overflows to Infinity for very negative g, giving g / Infinity = -0: the right limit.
      return (gate / (1 + Math.exp(-gate))) * up;
    case 'gelu-tanh':
      // PyTorch's gelu(approximate="tanh"): 0.5 g (1 + tanh(√(2/π) (g + 0.044715 g³))).
      return 0.5 * gate * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (gate + 0.044715 * gate * gate * gate))) * up;
    case 'clamped-swiglu': {
      const g = Math.min(gate, activation.limit);
      const u = Math.min(Math.max(up, -activation.limit), activation.limit);
      return (u + 1) * (g / (1 + Math.exp(-activation.alpha * g)));
    }
  }
}

/** gateUp [rows, 2 * n] (gate columns, then up columns) -> out [rows, n] = act(gate) * up. */
export function gatedActivation(activation: Activation, gateUp: Float32Array, rows: number, n: number, out: Float32Array): void {
  for (let r = 0; r < rows; r++) {
    const gateAt = r * 2 * n;
    const upAt = gateAt + n;
    const outAt = r * n;
    for (let i = 0; i < n; i++) out[outAt + i] = gatedValue(activation, gateUp[gateAt + i], gateUp[upAt + i]);
  }
}
