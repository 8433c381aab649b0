// Indexing kernels: gather (numpy.take along an axis) and its adjoint scatterAdd; embedding and
// embeddingBackward are the outer = 1 cases. Out-of-range indices are reported through the device
// error flag and raised at the next sync point.
#include <algorithm>

#include "device.cuh"

namespace lts {
namespace {

// x: (outer, n, inner), idx: i32 (K) → y: (outer, K, inner)
template <class W>
__global__ void takeKernel(const W* x, const int* idx, W* y, int64_t outer, int64_t n, int64_t K, int64_t inner, DeviceError* err, int code) {
  int64_t total = outer * K * inner;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = t % inner, k = (t / inner) % K, o = t / (inner * K);
    int j = idx[k];
    if (j < 0 || j >= n) {
      reportError(err, code, (int)k, j, n);
      continue;
    }
    y[t] = x[(o * n + j) * inner + i];
  }
}

// u: (outer, K, inner), idx: (K) → y: (outer, size, inner), y[o, j, i] = Σ u[o, k, i] over the k
// with idx[k] = j, summed in f32 in the order of k and rounded once. Each block owns SCATTER_ROWS
// rows of y and up to 256 of its columns, and finds the k that land in its rows by scanning idx:
// no atomics, so the sums are the same on every run (a training step is reproducible, and a
// resumed run repeats the uninterrupted one bit for bit).
constexpr int SCATTER_ROWS = 32;
template <class T>
__global__ void __launch_bounds__(256) scatterKernel(const T* u, const int* idx, T* y, int64_t outer, int64_t size, int64_t K, int64_t inner, DeviceError* err, int code) {
  __shared__ float acc[SCATTER_ROWS][256];  // column tid of the tile is only ever touched by thread tid
  __shared__ int found[256], rows[256], warpCount[8];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t col = (int64_t)blockIdx.x * 256 + tid;
  const bool reporter = blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0;
  for (int64_t o = blockIdx.z; o < outer; o += gridDim.z)
  for (int64_t j0 = (int64_t)blockIdx.y * SCATTER_ROWS; j0 < size; j0 += (int64_t)gridDim.y * SCATTER_ROWS) {
    for (int r = 0; r < SCATTER_ROWS; r++) acc[r][tid] = 0.0f;
    for (int64_t kb = 0; kb < K; kb += 256) {
      const int64_t k = kb + tid;
      const int j = k < K ? idx[k] : 0;
      const bool bad = k < K && (j < 0 || j >= size);
      if (bad && reporter && o == 0 && j0 == 0) reportError(err, code, (int)k, j, size);
      const bool mine = k < K && !bad && j >= j0 && j < j0 + SCATTER_ROWS;
      const unsigned ballot = __ballot_sync(0xffffffffu, mine);
      if (lane == 0) warpCount[warp] = __popc(ballot);
      __syncthreads();
      int before = 0, total = 0;
      for (int w = 0; w < 8; w++) before += w < warp ? warpCount[w] : 0, total += warpCount[w];
      if (mine) {
        const int at = before + __popc(ballot & ((1u << lane) - 1u));  // the matches keep the order of k
        found[at] = tid;
        rows[at] = (int)(j - j0);
      }
      __syncthreads();
      if (col < inner)
        for (int m = 0; m < total; m++) acc[rows[m]][tid] += toF(u[(o * K + kb + found[m]) * inner + col]);
      __syncthreads();  // found, rows and warpCount are rewritten for the next 256 indices
    }
    if (col < inner)
      for (int r = 0; r < SCATTER_ROWS && j0 + r < size; r++) y[(o * size + j0 + r) * inner + col] = fromF<T>(acc[r][tid]);
  }
}

// p: [x, idx, y]; i: [elementBytes, outer, n, K, inner, errorCode]
void take(Context& c, const Args& a) {
  int bytes = (int)a.i.at(0);
  int64_t outer = a.i.at(1), n = a.i.at(2), K = a.i.at(3), inner = a.i.at(4);
  int code = (int)a.i.at(5);
  int64_t total = outer * K * inner;
  if (total == 0) return;
  auto g = blocksFor(total, 256);
  auto idx = a.ptr<int>(1);
  if (bytes == 4) takeKernel<uint32_t><<<g, 256, 0, c.stream>>>(a.ptr<uint32_t>(0), idx, a.ptr<uint32_t>(2), outer, n, K, inner, c.error, code);
  else if (bytes == 2) takeKernel<uint16_t><<<g, 256, 0, c.stream>>>(a.ptr<uint16_t>(0), idx, a.ptr<uint16_t>(2), outer, n, K, inner, c.error, code);
  else takeKernel<uint8_t><<<g, 256, 0, c.stream>>>(a.ptr<uint8_t>(0), idx, a.ptr<uint8_t>(2), outer, n, K, inner, c.error, code);
  LTS_CHECK(cudaGetLastError(), "gather kernel launch");
}

// p: [u, idx, y]; i: [dtype, outer, size, K, inner, errorCode]. Accumulates in f32, deterministically.
void scatterAdd(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t outer = a.i.at(1), size = a.i.at(2), K = a.i.at(3), inner = a.i.at(4);
  int code = (int)a.i.at(5);
  if (outer * size * inner == 0) return;
  dim3 grid((unsigned)((inner + 255) / 256), (unsigned)std::min<int64_t>((size + SCATTER_ROWS - 1) / SCATTER_ROWS, 65535), (unsigned)std::min<int64_t>(outer, 65535));
  LTS_DISPATCH_FLOAT(dt, T, scatterKernel<T><<<grid, 256, 0, c.stream>>>(a.ptr<T>(0), a.ptr<int>(1), a.ptr<T>(2), outer, size, K, inner, c.error, code));
  LTS_CHECK(cudaGetLastError(), "scatterAdd kernel launch");
}

}  // namespace

void registerIndexing(Registry& r) {
  r["take"] = take;
  r["scatterAdd"] = scatterAdd;
}

}  // namespace lts
