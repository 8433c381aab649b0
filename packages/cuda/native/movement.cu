// Movement kernels: one strided copy serves permute, slice, expand (gather form: strided source,
// contiguous destination), pad and concat (scatter form: contiguous source placed at strided
// destinations). Raw elements move unchanged, whatever the dtype.
//
// Fast path: where the innermost dim is contiguous in both source and destination (permutes that
// keep the last dim, slices and concats along other dims or along the last one at multiples of
// 16 bytes), k neighbouring elements move as one unit of k · elementBytes, up to 16 bytes: the
// same kernel, on a shape whose innermost extent and outer strides are divided by k. Offsets use
// 32-bit arithmetic when they fit (int64 otherwise).
#include "device.cuh"

namespace lts {
namespace {

// Unit at multi-index i of ix.shape: dst[Σ i·dstStride] = src[Σ i·srcStride]
// (ix operand 0 = source strides, 1 = destination strides; bases already added to the pointers)
template <class W, class I>
__global__ void stridedCopyKernel(const W* src, W* dst, Index ix, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    I off[2];
    offsetsOf<2>(ix, (I)i, off);
    dst[off[1]] = src[off[0]];
  }
}

template <class W>
void launchCopy(Context& c, const void* src, void* dst, const Index& ix, int64_t n) {
  auto g = blocksFor(n, 256);
  if (fitsInt32(ix, 2, n)) stridedCopyKernel<W, uint32_t><<<g, 256, 0, c.stream>>>((const W*)src, (W*)dst, ix, n);
  else stridedCopyKernel<W, int64_t><<<g, 256, 0, c.stream>>>((const W*)src, (W*)dst, ix, n);
}

// How many neighbouring elements may move as one unit (a power of two up to 16 bytes): the
// innermost dim is contiguous in both operands, its extent and every other stride are multiples
// of it, and both pointers are aligned to it. 1 when nothing fits.
int64_t unitElements(const Index& ix, int bytes, const void* src, const void* dst) {
  if (ix.rank == 0) return 1;
  int in = ix.rank - 1;
  if (ix.stride[0][in] != 1 || ix.stride[1][in] != 1) return 1;
  for (int64_t k = 16 / bytes; k > 1; k /= 2) {
    bool ok = ix.shape[in] % k == 0 && alignedTo(src, k * bytes) && alignedTo(dst, k * bytes);
    for (int j = 0; j < 2; j++)
      for (int d = 0; d < in; d++) ok = ok && ix.stride[j][d] % k == 0;
    if (ok) return k;
  }
  return 1;
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
  const char* src = a.ptr<const char>(0) + srcBase * bytes;
  char* dst = a.ptr<char>(1) + dstBase * bytes;
  int64_t k = unitElements(ix, bytes, src, dst);
  if (k > 1) {
    int in = ix.rank - 1;
    ix.shape[in] /= k;
    for (int j = 0; j < 2; j++)
      for (int d = 0; d < in; d++) ix.stride[j][d] /= k;
    n /= k;
  }
  switch (bytes * k) {
    case 16: launchCopy<uint4>(c, src, dst, ix, n); break;
    case 8: launchCopy<uint64_t>(c, src, dst, ix, n); break;
    case 4: launchCopy<uint32_t>(c, src, dst, ix, n); break;
    case 2: launchCopy<uint16_t>(c, src, dst, ix, n); break;
    default: launchCopy<uint8_t>(c, src, dst, ix, n); break;
  }
  LTS_CHECK(cudaGetLastError(), "strided copy kernel launch");
}

}  // namespace

void registerMovement(Registry& r) { r["stridedCopy"] = stridedCopy; }

}  // namespace lts
