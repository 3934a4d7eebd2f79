// The gated activations of an MLP's up projection, act(gate) * up, on values already rounded to
// bf16 (as the separate projections of transformers would leave them). ACT selects the kind:
// 0 silu; 1 gelu-tanh (PyTorch's tanh approximation); 2 gpt-oss's clamped swiglu, gate clamped to
// at most `limit` and up to ±limit, (up + 1) · gate · σ(alpha · gate). alpha and limit are unused
// by the first two.
#pragma once

#ifndef ACT
#define ACT 0
#endif

__device__ __forceinline__ float gated_activation(float gate, float up, float alpha, float limit) {
#if ACT == 0
  return gate / (1.f + __expf(-gate)) * up;
#elif ACT == 1
  const float inner = 0.7978845608028654f * (gate + 0.044715f * gate * gate * gate);
  return 0.5f * gate * (1.f + tanhf(inner)) * up;
#else
  const float g = fminf(gate, limit);
  const float u = fminf(fmaxf(up, -limit), limit);
  return (u + 1.f) * (g / (1.f + __expf(-alpha * g)));
#endif
}
