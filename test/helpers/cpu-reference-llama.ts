import type { RopeTable } from '../../src/backend/backend.ts';
import type { LlamaConfig } from '../../src/models/llama.ts';
import type { HostLlamaWeights } from './cpu-random-llama.ts';

/**
 * What the KV cache keeps of one rotated key head or value head (a quantized cache's round trip),
 * given where it sits: its layer, token position and KV head.
 */
export type CachedHead = (head: number[], kind: 'k' | 'v', layer: number, position: number, kvHead: number) => number[];

/**
 * A deliberately naive dense forward pass over one sequence, in float64 throughout: no paging,
 * no fused ops, no batching; the attention scores of every position are built from full K/V
 * lists, each head as `cached` returns it (as computed, unless given). Returns logits for every
 * position. It checks the model's wiring, not its speed.
 */
export function referenceLogits(config: LlamaConfig, w: HostLlamaWeights, rope: RopeTable, tokens: number[], cached: CachedHead = (head) => head): number[][] {
  const { hiddenSize: hidden, headDim, numHeads, numKvHeads, rmsNormEps: eps } = config;
  const group = numHeads / numKvHeads;
  let stream = tokens.map((id) => Array.from(w.embedding.subarray(id * hidden, (id + 1) * hidden)));
  for (const [index, layer] of w.layers.entries()) {
    const window = config.slidingWindows[index];
    const qs: number[][][] = [];
    const ks: number[][][] = [];
    const vs: number[][][] = [];
    stream.forEach((x, position) => {
      const packed = linear(layer.qkv, layer.qkvBias, rmsNorm(x, layer.inputNorm, eps));
      const heads = (first: number, count: number) =>
        Array.from({ length: count }, (_, h) => packed.slice((first + h) * headDim, (first + h + 1) * headDim));
      let q = heads(0, numHeads);
      let k = heads(numHeads, numKvHeads);
      if (config.qkNorm) {
        q = q.map((head) => rmsNorm(head, layer.qNorm!, eps));
        k = k.map((head) => rmsNorm(head, layer.kNorm!, eps));
      }
      qs.push(q.map((head) => rotate(head, position, rope)));
      ks.push(k.map((head, h) => cached(rotate(head, position, rope), 'k', index, position, h)));
      vs.push(heads(numHeads + numKvHeads, numKvHeads).map((head, h) => cached(head, 'v', index, position, h)));
    });
    stream = stream.map((x, position) => {
      const attended: number[] = [];
      for (let h = 0; h < numHeads; h++) {
        const kv = Math.floor(h / group);
        const visible: number[] = [];
        for (let j = 0; j <= position; j++) {
          if (window === null || position - j < window) visible.push(j);
        }
        const scores = visible.map((j) => dot(qs[position][h], ks[j][kv]) * headDim ** -0.5);
        const probs = softmax(scores);
        for (let d = 0; d < headDim; d++) attended.push(visible.reduce((s, j, i) => s + probs[i] * vs[j][kv][d], 0));
      }
      const afterAttention = add(x, linear(layer.o, layer.oBias, attended));
      const gateUp = linear(layer.gateUp, null, rmsNorm(afterAttention, layer.postAttentionNorm, eps));
      const inter = gateUp.length / 2;
      const act = gateUp.slice(0, inter).map((g, i) => (g / (1 + Math.exp(-g))) * gateUp[inter + i]);
      return add(afterAttention, linear(layer.down, null, act));
    });
  }
  return stream.map((x) => linear(w.lmHead, null, rmsNorm(x, w.finalNorm, eps)));
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function add(a: number[], b: number[]): number[] {
  return a.map((v, i) => v + b[i]);
}

function rmsNorm(x: number[], weight: Float32Array, eps: number): number[] {
  const rms = Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length + eps);
  return x.map((v, i) => (v / rms) * weight[i]);
}

/** weight [out, in] times x, plus bias. */
function linear(weight: Float32Array, bias: Float32Array | null, x: number[]): number[] {
  const outDim = weight.length / x.length;
  return Array.from({ length: outDim }, (_, o) => dot(weight.subarray(o * x.length, (o + 1) * x.length), x) + (bias === null ? 0 : bias[o]));
}

function softmax(scores: number[]): number[] {
  const max = Math.max(...scores);
  const exps = scores.map((s) => Math.exp(s - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

// rotate_half: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) with x2 the second half.
function rotate(head: number[], position: number, rope: RopeTable): number[] {
  const half = head.length / 2;
  const at = position * half;
  const rotated = head.slice();
  for (let i = 0; i < half; i++) {
    const c = rope.cos[at + i];
    const s = rope.sin[at + i];
    rotated[i] = head[i] * c - head[half + i] * s;
    rotated[half + i] = head[half + i] * c + head[i] * s;
  }
  return rotated;
}
