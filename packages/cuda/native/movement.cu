// Movement kernels: one strided copy serves permute, slice, expand (gather form: strided source,
// contiguous destination), pad and concat (scatter form: contiguous source placed at strided
// destinations). Raw elements move unchanged, whatever the dtype.
#include "device.cuh"

namespace lts {
namespace {

// Element at multi-index i of ix.shape: dst[dstBase + Σ i·dstStride] = src[srcBase + Σ i·srcStride]
// (ix operand 0 = source strides, 1 = destination strides)
template <class W>
__global__ void stridedCopyKernel(const W* src, int64_t srcBase, W* dst, int64_t dstBase, Index ix, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t so = srcBase, dso = dstBase, rest = i;
    for (int d = ix.rank - 1; d >= 0; d--) {
      int64_t c = rest % ix.shape[d];
      rest /= ix.shape[d];
      so += c * ix.stride[0][d];
      dso += c * ix.stride[1][d];
    }
    dst[dso] = src[so];
  }
}

// p: [src, dst]; i: [elementBytes, srcBase, dstBase, shape..., srcStrides...(rank-prefixed), dstStrides...]
void stridedCopy(Context& c, const Args& a) {
  Reader r{a.i};
  int bytes = (int)r.next();
  int64_t srcBase = r.next(), dstBase = r.next();
  auto shape = r.shape(), ss = r.shape(), ds = r.shape();
  int64_t n = numel(shape);
  if (n == 0) return;
  Index ix = makeIndex(shape, {ss, ds});
  auto g = blocksFor(n, 256);
  switch (bytes) {
    case 8: stridedCopyKernel<uint64_t><<<g, 256, 0, c.stream>>>(a.ptr<uint64_t>(0), srcBase, a.ptr<uint64_t>(1), dstBase, ix, n); break;
    case 4: stridedCopyKernel<uint32_t><<<g, 256, 0, c.stream>>>(a.ptr<uint32_t>(0), srcBase, a.ptr<uint32_t>(1), dstBase, ix, n); break;
    case 2: stridedCopyKernel<uint16_t><<<g, 256, 0, c.stream>>>(a.ptr<uint16_t>(0), srcBase, a.ptr<uint16_t>(1), dstBase, ix, n); break;
    default: stridedCopyKernel<uint8_t><<<g, 256, 0, c.stream>>>(a.ptr<uint8_t>(0), srcBase, a.ptr<uint8_t>(1), dstBase, ix, n); break;
  }
  LTS_CHECK(cudaGetLastError(), "strided copy kernel launch");
}

}  // namespace

void registerMovement(Registry& r) { r["stridedCopy"] = stridedCopy; }

}  // namespace lts
