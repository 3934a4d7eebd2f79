/** gateUp [rows, 2 * n] (gate columns, then up columns) -> out [rows, n] = silu(gate) * up. */
export function siluMul(gateUp: Float32Array, rows: number, n: number, out: Float32Array): void {
  for (let r = 0; r < rows; r++) {
    const gateAt = r * 2 * n;
    const upAt = gateAt + n;
    const outAt = r * n;
    for (let i = 0; i < n; i++) {
      const g = gateUp[gateAt + i];
      // exp(-g) overflows to Infinity for very negative g, giving g / Infinity = -0: the right limit.
      out[outAt + i] = (g / (1 + Math.exp(-g))) * gateUp[upAt + i];
    }
  }
}
