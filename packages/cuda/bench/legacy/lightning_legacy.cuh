// Earlier tensor-core versions of Lightning Attention (KERNELS.md has their history and numbers).
// They left the addon when version 5 (native/lightning_v5.cu) took over their shapes; the bench
// harness still builds and times them beside it. bf16 only; D = 128, E a multiple of 64 forward,
// D = E = 128 backward (version 3: D = E = 128 both ways).
#pragma once
#include "lightning.cuh"

namespace lts {

// Version 2: bf16 tensor cores (mma.sync m16n8k16); backward as three forward passes.
bool lightningForwardV2Supported(int dt, LightningDims d);
bool lightningBackwardV2Supported(int dt, LightningDims d);
void lightningBackwardV2(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const void* dO,
                         const float* dSf, const float* S0, void* dq, void* dk, void* dv, float* dS0);
void lightningForwardV2(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0,
                        void* o, float* Sfinal);

// Version 3: version 2 with all of E = 128 in one CTA of 8 warps (q and k read once).
bool lightningV3Supported(int dt, LightningDims d);
void lightningForwardV3(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0,
                        void* o, float* Sfinal);
void lightningBackwardV3(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const void* dO,
                         const float* dSf, const float* S0, void* dq, void* dk, void* dv, float* dS0);

// Version 4: version 2 with the state update's weights applied in registers; same support as version 2.
void lightningForwardV4(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0,
                        void* o, float* Sfinal);
void lightningBackwardV4(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const void* dO,
                         const float* dSf, const float* S0, void* dq, void* dk, void* dv, float* dS0);

}  // namespace lts
