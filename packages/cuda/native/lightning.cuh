// Lightning Attention kernels shared between versions (docs/ALGORITHM.md A, B). Per (batch, head):
//   S_t = λ S_{t−1} + k_tᵀ v_t,  o_t = q_t S_t,  λ = exp(−slope)
// Letters: B batch, H heads, T time, D query/key head dim, E value head dim, C chunk size,
// NC = ⌈T / C⌉ chunks. The chunk size is the GPU's own choice: the result does not depend on it,
// so attrs.blockSize and attrs.impl (which pick among CPU kernels) are not consulted here.
#pragma once
#include <string>

#include "device.cuh"

namespace lts {

struct LightningDims {
  int B, H, T, D, E;
  int BH() const { return B * H; }
};

// Version 1: plain CUDA cores, any D and E, any float dtype (f32 accumulates in double). Chunked
// "parallel" form: per-chunk local states, a scan over chunks, then every chunk's output at once.
void lightningForwardV1(Context& c, int dt, LightningDims d, const void* q, const void* k, const void* v, const float* slopes,
                        const float* S0, void* o, float* Sfinal);
void lightningBackwardV1(Context& c, int dt, LightningDims d, const void* q, const void* k, const void* v, const float* slopes,
                         const void* dO, const float* dSf, const float* S0, void* dq, void* dk, void* dv, float* dS0);

// Version 5: tensor cores (mma.sync m16n8k16, f32 accumulation) for bf16 and f16; forward for
// D ∈ {64, 128, 256} and E a multiple of 64, backward (three forward passes) for D, E ∈ {64, 128, 256};
// any T. Versions 2–4 (bf16, D = 128 only) are kept in bench/legacy for the harness. On Hopper the
// passes of key width 128 and 256 run version 6 (wgmma, in lightning_v5.cu) behind the same calls.
//
// Segment states (the op's `segmentTokens`): the forward may also store the states entering tokens
// 0, L, 2L, … (f32 (BH, ⌈T/L⌉, D, E), entry 0 = S0 or zeros), running its sequence split on exactly
// those segments, and the backward may take them back: its dq pass reads them transposed instead of
// remaking them (phase A and the scan) where its own split has the same segments.
bool lightningForwardV5Supported(int dt, LightningDims d);
bool lightningBackwardV5Supported(int dt, LightningDims d);
void lightningForwardV5(Context& c, int dt, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0,
                        void* o, float* Sfinal, float* segStates = nullptr, int segTokens = 0);
void lightningBackwardV5(Context& c, int dt, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const void* dO,
                         const float* dSf, const float* S0, void* dq, void* dk, void* dv, float* dS0, const float* segStates = nullptr,
                         int segTokens = 0);
// The L (a multiple of 64) of the forward's sequence split for this call where the backward's dq
// pass splits the same way and so takes the forward's segment states; 0 where either runs unsplit.
int lightningSegmentTokensV5(Context& c, int dt, LightningDims d);
// What version 5 will run for this call (E-slices, segments, warps), for the debug log and the bench.
std::string lightningV5Describe(Context& c, int dt, LightningDims d, bool backward);

// The kernel the dispatcher (lightning.cu) picks for this call, in words: "v5 tensor cores (...)" or
// "v1 ...". Honours LIGHTNING_CUDA_LA_VERSION. With LIGHTNING_CUDA_DEBUG=1 the dispatcher prints it
// to stderr once per (op, dtype, shape).
std::string lightningKernelName(Context& c, int dt, LightningDims d, bool backward);

// The segment length the forward keeps states for (lightningSegmentTokensV5 where version 5/6 runs
// the call, else 0): the CUDA backend's `lightningSegmentTokens`.
int lightningSegmentTokens(Context& c, int dt, LightningDims d);

}  // namespace lts
