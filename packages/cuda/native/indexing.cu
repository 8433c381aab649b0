// Indexing kernels: gather (numpy.take along an axis) and its adjoint scatterAdd; embedding and
// embeddingBackward are the outer = 1 cases. Out-of-range indices are reported through the device
// error flag and raised at the next sync point.
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

// u: (outer, K, inner), idx: (K) → acc: f32 (outer, size, inner), acc zeroed before
template <class T>
__global__ void scatterKernel(const T* u, const int* idx, float* acc, int64_t outer, int64_t size, int64_t K, int64_t inner, DeviceError* err, int code) {
  int64_t total = outer * K * inner;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = t % inner, k = (t / inner) % K, o = t / (inner * K);
    int j = idx[k];
    if (j < 0 || j >= size) {
      reportError(err, code, (int)k, j, size);
      continue;
    }
    atomicAdd(&acc[(o * size + j) * inner + i], toF(u[t]));
  }
}

template <class T>
__global__ void fromF32Kernel(const float* src, T* dst, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) dst[i] = fromF<T>(src[i]);
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

// p: [u, idx, y]; i: [dtype, outer, size, K, inner, errorCode]. Accumulates in f32 (atomics).
void scatterAdd(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t outer = a.i.at(1), size = a.i.at(2), K = a.i.at(3), inner = a.i.at(4);
  int code = (int)a.i.at(5);
  int64_t outN = outer * size * inner, total = outer * K * inner;
  if (outN == 0) return;
  float* acc = dt == F32 ? a.ptr<float>(2) : (float*)c.scratch(outN * sizeof(float));
  LTS_CHECK(cudaMemsetAsync(acc, 0, outN * sizeof(float), c.stream), "scatterAdd memset");
  if (total > 0) {
    LTS_DISPATCH_FLOAT(dt, T, scatterKernel<T><<<blocksFor(total, 256), 256, 0, c.stream>>>(a.ptr<T>(0), a.ptr<int>(1), acc, outer, size, K, inner, c.error, code));
    LTS_CHECK(cudaGetLastError(), "scatterAdd kernel launch");
  }
  if (dt != F32) {
    LTS_DISPATCH_FLOAT(dt, T, fromF32Kernel<T><<<blocksFor(outN, 256), 256, 0, c.stream>>>(acc, a.ptr<T>(2), outN));
    LTS_CHECK(cudaGetLastError(), "scatterAdd convert launch");
    c.release(acc);
  }
}

}  // namespace

void registerIndexing(Registry& r) {
  r["take"] = take;
  r["scatterAdd"] = scatterAdd;
}

}  // namespace lts
