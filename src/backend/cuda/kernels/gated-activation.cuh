// The gated MLP's activation act(gate) * up, in f32, for the Activation kinds of backend.ts. ACT is
// a compile-time choice (each kernel that applies it is specialized by -DACT, passed as KIND), so the silu path of
// most models compiles to what it was before the other kinds existed.
#pragma once

#define ACT_SILU 0
#define ACT_GELU_TANH 1
#define ACT_CLAMPED_SWIGLU 2

// alpha and limit are read by ACT_CLAMPED_SWIGLU only (gpt-oss: gate clamped to <= limit, up to
// [-limit, limit], then (up + 1) · gate · σ(alpha · gate)).
template <int KIND>
__device__ __forceinline__ float gated_activation(float gate, float up, float alpha, float limit) {
  if (KIND == ACT_SILU) return gate / (1.f + __expf(-gate)) * up;
  if (KIND == ACT_GELU_TANH) {
    // PyTorch's gelu(approximate="tanh"): 0.5 g (1 + tanh(√(2/π) (g + 0.044715 g³))).
    const float inner = 0.7978845608028654f * (gate + 0.044715f * gate * gate * gate);
    return 0.5f * gate * (1.f + tanhf(inner)) * up;
  }
  const float g = fminf(gate, limit);
  const float u = fminf(fmaxf(up, -limit), limit);
  return (u + 1.f) * (g / (1.f + __expf(-alpha * g)));
}
