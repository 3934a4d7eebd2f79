import type { Backend, MoeWeights, Tensor } from './backend.ts';

/**
 * A mixture-of-experts block from the backend's ops: router logits in float32, the routing, the
 * routed experts' MLPs and, if the block has one, the shared expert added (scaled by its sigmoid
 * gate). This is `Backend.moe`'s meaning; the CPU backend runs it as is, the CUDA backend for the
 * steps its fused decode kernel does not take (and for all of them with KEEL_MOE_DECODE=split).
 */
export function composeMoe(b: Backend, x: Tensor, w: MoeWeights): Tensor {
  const logits = b.linear(x, w.router, w.routerBias, { float32: true });
  const out = b.expertMlp(x, b.routeExperts(logits, w.routing), w.experts, w.activation);
  const { shared } = w;
  if (shared !== null) {
    const product = b.linear(b.gatedLinear(x, shared.gateUp, shared.activation), shared.down, null);
    b.addInto(out, product, shared.gate === null ? null : b.linear(x, shared.gate, null));
  }
  return out;
}
