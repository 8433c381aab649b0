// Lightning Attention kernels shared between versions (ALGORITHM.md A, B). Per (batch, head):
//   S_t = λ S_{t−1} + k_tᵀ v_t,  o_t = q_t S_t,  λ = exp(−slope)
// Letters: B batch, H heads, T time, D query/key head dim, E value head dim, C chunk size,
// NC = ⌈T / C⌉ chunks. The chunk size is the GPU's own choice: the result does not depend on it,
// so attrs.blockSize and attrs.impl (which pick among CPU kernels) are not consulted here.
#pragma once
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

// Version 2: bf16 tensor cores (mma.sync m16n8k16); forward for D = 128 and E a multiple of 64,
// backward (as three forward passes) for D = E = 128.
bool lightningForwardV2Supported(int dt, LightningDims d);
bool lightningBackwardV2Supported(int dt, LightningDims d);
void lightningBackwardV2(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const void* dO,
                         const float* dSf, const float* S0, void* dq, void* dk, void* dv, float* dS0);
void lightningForwardV2(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0,
                        void* o, float* Sfinal);

// Version 3: version 2 with all of E = 128 in one CTA of 8 warps (q and k read once); D = E = 128.
bool lightningV3Supported(int dt, LightningDims d);
void lightningForwardV3(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0,
                        void* o, float* Sfinal);
void lightningBackwardV3(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const void* dO,
                         const float* dSf, const float* S0, void* dq, void* dk, void* dv, float* dS0);

// Version 4: version 2 with the state update's weights applied in registers (two barriers per chunk
// instead of four); same support as version 2.
void lightningForwardV4(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0,
                        void* o, float* Sfinal);
void lightningBackwardV4(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const void* dO,
                         const float* dSf, const float* S0, void* dq, void* dk, void* dv, float* dS0);

}  // namespace lts
