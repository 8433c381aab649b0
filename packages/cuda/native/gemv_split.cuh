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

// φ of splitQkvu in the ops of its chain, each stored result rounded to T: the same function as
// native/decode.cu's `activate`, so that the projection's epilogue gives splitQkvu's bits.
template <class T>
__device__ __forceinline__ T activate(T raw, int act) {
  const float x = toF(raw);
  switch (static_cast<QkvActivation>(act)) {
    case QkvActivation::silu: return fromF<T>(x / (1.0f + expf(-x)));
    case QkvActivation::relu: return fromF<T>(x > 0.0f ? x : 0.0f);
    case QkvActivation::onePlusElu: {
      const float r = x > 0.0f ? x : 0.0f;
      const float m = isnan(x) ? NAN : fminf(x, 0.0f);
      return fromF<T>(__fadd_rn(toF(fromF<T>(r)), toF(fromF<T>(expf(m)))));
    }
    default: return raw;
  }
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
  const float angle = __fmul_rn((float)loadAny(s.theta, s.thDt, c), s.positions[b]);
  const float cs = toF(fromF<T>(cosf(angle))), sn = toF(fromF<T>(sinf(angle)));
  const int64_t o = ((int64_t)b * s.heads + h) * 2 * s.hd + d;
  out[o] = fromF<T>(__fmul_rn(toF(a), cs));
  out[o + s.hd] = fromF<T>(__fmul_rn(toF(a), sn));
}

}  // namespace lts
