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

// copyMany: several byte ranges copied, or zeroed where the source is null, in one launch (a
// decoder clears or moves one row of every layer's state at once). Block row y takes range y; the
// ranges are kernel parameters, kCopyRanges a launch (1.5 KB of the 4 KB parameter space).
constexpr int kCopyRanges = 64;
struct CopyRanges {
  char* dst[kCopyRanges];
  const char* src[kCopyRanges];
  int64_t bytes[kCopyRanges];
};

__global__ void copyRangesKernel(CopyRanges r) {
  char* dst = r.dst[blockIdx.y];
  const char* src = r.src[blockIdx.y];
  int64_t n = r.bytes[blockIdx.y];
  int64_t first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
  // 16-byte units where both ends are aligned to 16 (state rows are), single bytes for the rest.
  int64_t units = (reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src)) % 16 == 0 ? n / 16 : 0;
  for (int64_t i = first; i < units; i += stride) reinterpret_cast<uint4*>(dst)[i] = src ? reinterpret_cast<const uint4*>(src)[i] : make_uint4(0, 0, 0, 0);
  for (int64_t i = units * 16 + first; i < n; i += stride) dst[i] = src ? src[i] : 0;
}

// p: [dst0, src0 (0: zeros), dst1, src1, ...]; i: [dstByteOffset0, srcByteOffset0, bytes0, ...]
void copyMany(Context& c, const Args& a) {
  size_t count = a.p.size() / 2;
  if (a.p.size() != 2 * count || a.i.size() != 3 * count) throw std::runtime_error("copyMany: expected 2 pointers and 3 integers a range");
  for (size_t first = 0; first < count; first += kCopyRanges) {
    CopyRanges r{};
    int ranges = (int)std::min<size_t>(kCopyRanges, count - first);
    int64_t most = 0;
    for (int k = 0; k < ranges; k++) {
      size_t j = first + k;
      r.dst[k] = a.ptr<char>(2 * j) + a.i[3 * j];
      r.src[k] = a.p[2 * j + 1] ? a.ptr<const char>(2 * j + 1) + a.i[3 * j + 1] : nullptr;
      r.bytes[k] = a.i[3 * j + 2];
      most = std::max(most, r.bytes[k]);
    }
    if (most == 0) continue;
    // About 4 units a thread on the longest range; every range gets the same blocks.
    dim3 grid(blocksFor((most + 63) / 64, 256, 1024), ranges);
    copyRangesKernel<<<grid, 256, 0, c.stream>>>(r);
    LTS_CHECK(cudaGetLastError(), "copyMany kernel launch");
  }
}

}  // namespace

void registerMovement(Registry& r) {
  r["stridedCopy"] = stridedCopy;
  r["copyMany"] = copyMany;
}

}  // namespace lts
