// The gated activations of an MLP's up projection, act(gate) * up, in f32 on values already
// rounded to bf16 (as the separate projections of transformers would leave them), for the
// Activation kinds of backend.ts. ACT is a compile-time choice (each kernel that applies it is
// specialized by -DACT), so the silu path of most models compiles to what it was before the other
// kinds existed: 0 silu; 1 gelu-tanh (PyTorch's tanh approximation); 2 gpt-oss's clamped swiglu,
// gate clamped to at most `limit` and up to ±limit, (up + 1) · gate · σ(alpha · gate); 3 the exact
// (erf) GELU; 4 relu. alpha and limit are unused but by 2. A file compiled without ACT gets no
// gated_activation.
#pragma once

#ifdef ACT
__device__ __forceinline__ float gated_activation(float gate, float up, float alpha, float limit) {
#if ACT == 0
  return gate / (1.f + __expf(-gate)) * up;
#elif ACT == 1
  const float inner = 0.7978845608028654f * (gate + 0.044715f * gate * gate * gate);
  return 0.5f * gate * (1.f + tanhf(inner)) * up;
#elif ACT == 2
  const float g = fminf(gate, limit);
  const float u = fminf(fmaxf(up, -limit), limit);
  return (u + 1.f) * (g / (1.f + __expf(-alpha * g)));
#elif ACT == 3
  return 0.5f * gate * (1.f + erff(gate * 0.7071067811865476f)) * up;
#elif ACT == 4
  return fmaxf(gate, 0.f) * up;
#else
#error "ACT must be 0 (silu), 1 (gelu-tanh), 2 (clamped swiglu), 3 (gelu) or 4 (relu)"
#endif
}
#endif
