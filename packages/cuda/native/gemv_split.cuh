// qkvuProjection's epilogue, shared by the small-M kernel (native/gemv.cu) and the tensor-core one
// (native/gemv_mma.cu): an element of TNL's qkvu (B, 4·hid), f32 from the sums, written where
// splitQkvu (native/decode.cu) writes it, with φ and LRPE, so that both give that op's bits.
#pragma once
#include "device.cuh"
#include "runtime.h"

namespace lts {

// Where EPI_SPLIT writes: q, k (B, H, D) with D = hd, or 2·hd with LRPE (theta (H, hd) of dtype
// thDt, positions f32 (B)); v (B, H, hd); u (B, hid).
template <class T>
struct SplitArgs {
  T *q, *k, *v, *u;
  const void* theta;
  int thDt;
  const float* positions;
  int heads, hd, act;
};

// φ of splitQkvu in the ops of its chain, each stored result rounded to T; "none" passes the
// element through untouched, as the chain's slice copies it. splitQkvu (native/decode.cu) and the
// projections' epilogue both take it (and lrpePair below), so that they give the same bits.
template <class T>
__device__ __forceinline__ T activate(T raw, int act) {
  const float x = toF(raw);
  switch (static_cast<QkvActivation>(act)) {
    case QkvActivation::silu: return fromF<T>(x / (1.0f + expf(-x)));
    case QkvActivation::relu: return fromF<T>(x > 0.0f ? x : 0.0f);
    case QkvActivation::onePlusElu: {
      // relu(x) + exp(minimum(x, 0)): relu and minimum are exact, exp and the sum are rounded.
      const float r = x > 0.0f ? x : 0.0f;
      const float m = isnan(x) ? NAN : fminf(x, 0.0f);
      return fromF<T>(__fadd_rn(toF(fromF<T>(r)), toF(fromF<T>(expf(m)))));
    }
    default: return raw;
  }
}

// LRPE of an activated q or k channel c (θ: (H, hd) of dtype thDt) at `position`: a·cos(θp) and
// a·sin(θp). The phase in f32 (θ widened exactly), cos and sin in f32, each rounded to T before its
// product, each product rounded to T.
template <class T>
__device__ __forceinline__ void lrpePair(T a, const void* theta, int thDt, int c, float position, T& first, T& second) {
  const float angle = __fmul_rn((float)loadAny(theta, thDt, c), position);
  const float cs = toF(fromF<T>(cosf(angle))), sn = toF(fromF<T>(sinf(angle)));
  first = fromF<T>(__fmul_rn(toF(a), cs));
  second = fromF<T>(__fmul_rn(toF(a), sn));
}

// Element (b, row) of qkvu, rounded to T as the projection stores it, written where splitQkvu
// (native/decode.cu) writes it, with its φ and LRPE.
template <class T>
__device__ __forceinline__ void storeSplit(const SplitArgs<T>& s, int b, int row, float value) {
  const int hid = s.heads * s.hd;
  const int blk = row / hid, c = row - blk * hid;
  const int64_t i = (int64_t)b * hid + c;
  const T raw = fromF<T>(value);
  if (blk >= 2) {
    (blk == 2 ? s.v : s.u)[i] = raw;
    return;
  }
  const T a = activate(raw, s.act);
  T* out = blk == 0 ? s.q : s.k;
  if (s.theta == nullptr) {
    out[i] = a;
    return;
  }
  const int h = c / s.hd, d = c - h * s.hd;
  const int64_t o = ((int64_t)b * s.heads + h) * 2 * s.hd + d;
  lrpePair(a, s.theta, s.thDt, c, s.positions[b], out[o], out[o + s.hd]);
}

}  // namespace lts
