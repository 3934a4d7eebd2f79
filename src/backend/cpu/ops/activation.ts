import type { Activation, XieluParams } from '../../backend.ts';

/** The activation's value for one gate/up pair: act(gate) * up, in float64. */
export function gatedValue(activation: Activation, gate: number, up: number): number {
  switch (activation.kind) {
    case 'silu':
      // exp(-g) overflows to Infinity for very negative g, giving g / Infinity = -0: the right limit.
      return (gate / (1 + Math.exp(-gate))) * up;
    case 'gelu-tanh':
      // PyTorch's gelu(approximate="tanh"): 0.5 g (1 + tanh(√(2/π) (g + 0.044715 g³))).
      return 0.5 * gate * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (gate + 0.044715 * gate * gate * gate))) * up;
    case 'gelu':
      return 0.5 * gate * erfc(-gate * Math.SQRT1_2) * up;
    case 'relu':
      return Math.max(gate, 0) * up;
    case 'clamped-swiglu': {
      const g = Math.min(gate, activation.limit);
      const u = Math.min(Math.max(up, -activation.limit), activation.limit);
      return (u + 1) * (g / (1 + Math.exp(-activation.alpha * g)));
    }
  }
}

/** xIELU of one value (Backend.xielu), in float64. */
export function xieluValue(x: number, p: XieluParams): number {
  return x > 0 ? p.alphaP * x * x + p.beta * x : (Math.expm1(Math.min(x, p.eps)) - x) * p.alphaN + p.beta * x;
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

/**
 * erfc(x) by Numerical Recipes' Chebyshev fit (relative error below 1.2e-7 everywhere, so the
 * GELU it feeds stays as exact as float32 where it is tiny); JavaScript has no Math.erf.
 */
function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  const r = t * Math.exp(-z * z + poly);
  return x >= 0 ? r : 2 - r;
}
