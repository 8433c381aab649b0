// The small-M matrix-vector kernel of native/gemv.cu, which `matmul` (native/matmul.cu) tries
// before cuBLAS, and the `fusedLinear` launcher built on it.
#pragma once
#include "runtime.h"

namespace lts {

// The most rows of x the kernel takes: at M = 8 each bf16 weight element (2 bytes) feeds 8 FMAs,
// so streaming ~4.5 TB/s of weights needs ~18 T FMA/s, half the H200's f32 CUDA-core rate before
// the conversions; much above that the tensor-core tiles of cuBLAS win.
constexpr int GEMV_MAX_M = 4;

// y (m, n) = x (m, k) · w (n, k)ᵀ, all contiguous, f32 accumulation, on c.stream. Returns false,
// having enqueued nothing, where the kernel does not apply (LIGHTNING_CUDA_GEMV=0, m outside
// 1…GEMV_MAX_M, a row of w not on a 16-byte boundary, x too large for shared memory).
bool gemv(Context& c, int dt, const void* x, const void* w, void* y, int m, int n, int k);

// The launcher of `fusedLinear` (y = residual + (p(x)·wᵀ) ⊙ (p(x)·w2ᵀ), p(x) = SRMSNorm(x) ⊙ gate):
// one kernel where the small-M kernel applies to f16/bf16, else it sets c.declined and enqueues
// nothing (src/kernels.ts then runs the chain of ops the op stands for).
void fusedLinear(Context& c, const Args& args);

// The launcher of `qkvuProjection` (splitQkvu(SRMSNorm(x)·wᵀ)): one kernel where fusedLinear's
// would run, the split as its epilogue; else it declines as fusedLinear does.
void qkvuProjection(Context& c, const Args& args);

// The rows of x native/gemv_mma.cu's tensor-core kernel takes, above the small-M kernel's.
constexpr int MMA_MIN_M = GEMV_MAX_M + 1, MMA_MAX_M = 64;

// fusedLinear's arguments on the tensor-core kernel (native/gemv_mma.cu) for MMA_MIN_M…MMA_MAX_M
// rows of f16/bf16 where LIGHTNING_CUDA_GEMV_MMA=1. Returns false, having enqueued nothing, where it
// does not apply.
bool fusedLinearMma(Context& c, const Args& args);

// qkvuProjection's arguments on the tensor-core kernel, splitQkvu as its epilogue; false, having
// enqueued nothing, where it does not apply.
bool qkvuProjectionMma(Context& c, const Args& args);

// The rows of x native/skinny.cu's product kernel takes: those above the small-M kernel's, up to
// the 64 tokens a block's MMAs hold.
constexpr int SKINNY_MIN_M = GEMV_MAX_M + 1, SKINNY_MAX_M = 64;

// y (m, n) = x (m, k) · w (n, k)ᵀ (+ add, y's shape, before the one rounding), all contiguous, f32
// sums, on c.stream (native/skinny.cu). Returns false, having enqueued nothing, where the kernel
// does not apply (off unless LIGHTNING_CUDA_SKINNY=1, m outside SKINNY_MIN_M…SKINNY_MAX_M, f32, k not whole
// 16-byte packs, a share of k too long for its registers, weights past 64 MB, below sm_90).
bool skinny(Context& c, int dt, const void* x, const void* w, void* y, int m, int n, int k, const void* add);

}  // namespace lts
