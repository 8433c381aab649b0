// Fused row kernels: softmax and logSoftmax along an axis, softmax cross-entropy and its backward,
// SRMSNorm (x / sqrt(mean(x²) + eps)) and its backward. One block per row; f32 math, sums in f32
// tree order except where a row is a softmax normaliser (double, to stay near the CPU's float64).
// Letters: N rows, V vocabulary, M row width.
#include "device.cuh"

namespace lts {
namespace {

constexpr int THREADS = 256;

// x: (outer, n, inner) → y: same; one block per (outer, inner) line
template <class T>
__global__ void softmaxKernel(const T* x, T* y, int64_t n, int64_t inner, bool log) {
  __shared__ float sm[32];
  __shared__ double sd[32];
  int64_t line = blockIdx.x, o = line / inner, i = line % inner;
  const T* xs = x + o * n * inner + i;
  T* ys = y + o * n * inner + i;
  float m = -INFINITY;
  bool nan = false;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    float v = toF(xs[j * inner]);
    nan = nan || isnan(v);
    m = fmaxf(m, v);
  }
  m = blockMax(m, sm);
  nan = __syncthreads_or(nan);
  if (nan) m = NAN;
  double s = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += exp((double)toF(xs[j * inner]) - m);
  s = blockSum(s, sd);
  double lse = log ? ::log(s) : 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    double z = (double)toF(xs[j * inner]) - m;
    ys[j * inner] = fromF<T>((float)(log ? z - lse : exp(z) / s));
  }
}

// Row log-sum-exp of logits (V), shared by forward and backward.
template <class T>
__device__ double rowLse(const T* x, int64_t V, float* sm, double* sd) {
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, toF(x[j]));
  m = blockMax(m, sm);
  double s = 0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += exp((double)toF(x[j]) - m);
  s = blockSum(s, sd);
  return m + ::log(s);
}

// logits: (N, V), labels: i32 (N) → loss: f32 (N)
template <class T>
__global__ void xentKernel(const T* x, const int* labels, float* loss, int64_t V, int ignore, DeviceError* err) {
  __shared__ float sm[32];
  __shared__ double sd[32];
  int64_t r = blockIdx.x;
  int label = labels[r];
  if (label == ignore) {
    if (threadIdx.x == 0) loss[r] = 0;
    return;
  }
  if (label < 0 || label >= V) {
    if (threadIdx.x == 0) reportError(err, ERR_SOFTMAX_CROSS_ENTROPY, (int)r, label, V);
    return;
  }
  double lse = rowLse(x + r * V, V, sm, sd);
  if (threadIdx.x == 0) loss[r] = (float)(lse - toF(x[r * V + label]));
}

// (logits (N, V), labels (N), dloss f32 (N)) → dlogits (N, V) = (softmax − onehot) · dloss
template <class T>
__global__ void xentBackwardKernel(const T* x, const int* labels, const float* g, T* dx, int64_t V, int ignore, DeviceError* err) {
  __shared__ float sm[32];
  __shared__ double sd[32];
  int64_t r = blockIdx.x;
  int label = labels[r];
  const T* xr = x + r * V;
  T* dr = dx + r * V;
  if (label == ignore || label < 0 || label >= V) {
    if (label != ignore && threadIdx.x == 0) reportError(err, ERR_SOFTMAX_CROSS_ENTROPY_BACKWARD, (int)r, label, V);
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) dr[j] = fromF<T>(0.0f);
    return;
  }
  double lse = rowLse(xr, V, sm, sd);
  double gr = g[r];
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
    dr[j] = fromF<T>((float)((exp((double)toF(xr[j]) - lse) - (j == label ? 1.0 : 0.0)) * gr));
}

// x: (rows, M) → y: (rows, M). Sums in double: the backward's difference of two nearly equal
// terms would otherwise magnify f32 rounding past the f32 tolerance.
template <class T>
__global__ void rmsNormKernel(const T* x, T* y, int64_t M, float eps) {
  __shared__ double sd[32];
  const T* xr = x + blockIdx.x * M;
  T* yr = y + blockIdx.x * M;
  double ss = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    double v = toF(xr[j]);
    ss += v * v;
  }
  ss = blockSum(ss, sd);
  double r = 1.0 / sqrt(ss / (double)M + eps);
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) yr[j] = fromF<T>((float)(toF(xr[j]) * r));
}

// (x, dy): (rows, M) → dx = r · (dy − x̂ · mean(x̂ · dy)), x̂ = x · r
template <class T>
__global__ void rmsNormBackwardKernel(const T* x, const T* dy, T* dx, int64_t M, float eps) {
  __shared__ double sd[32];
  const T* xr = x + blockIdx.x * M;
  const T* gr = dy + blockIdx.x * M;
  T* dr = dx + blockIdx.x * M;
  double ss = 0, dot = 0;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    double v = toF(xr[j]);
    ss += v * v;
    dot += v * toF(gr[j]);
  }
  ss = blockSum(ss, sd);
  dot = blockSum(dot, sd);
  double r = 1.0 / sqrt(ss / (double)M + eps);
  double mean = dot * r / (double)M;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) dr[j] = fromF<T>((float)(r * (toF(gr[j]) - toF(xr[j]) * r * mean)));
}

// p: [x, y]; i: [dtype, outer, n, inner, log]
void softmax(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t outer = a.i.at(1), n = a.i.at(2), inner = a.i.at(3);
  bool log = a.i.at(4) != 0;
  if (outer * inner * n == 0) return;
  LTS_DISPATCH_FLOAT(dt, T, softmaxKernel<T><<<(unsigned)(outer * inner), THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), n, inner, log));
  LTS_CHECK(cudaGetLastError(), "softmax kernel launch");
}

// p: [logits, labels, loss]; i: [dtype, N, V, ignoreIndex]
void xent(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t N = a.i.at(1), V = a.i.at(2);
  int ignore = (int)a.i.at(3);
  if (N == 0) return;
  LTS_DISPATCH_FLOAT(dt, T, xentKernel<T><<<(unsigned)N, THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<int>(1), a.ptr<float>(2), V, ignore, c.error));
  LTS_CHECK(cudaGetLastError(), "softmaxCrossEntropy kernel launch");
}

// p: [logits, labels, dloss, dlogits]; i: [dtype, N, V, ignoreIndex]
void xentBackward(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t N = a.i.at(1), V = a.i.at(2);
  int ignore = (int)a.i.at(3);
  if (N == 0) return;
  LTS_DISPATCH_FLOAT(dt, T, xentBackwardKernel<T><<<(unsigned)N, THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<int>(1), a.ptr<float>(2), a.ptr<T>(3), V, ignore, c.error));
  LTS_CHECK(cudaGetLastError(), "softmaxCrossEntropyBackward kernel launch");
}

// p: [x, y] or [x, dy, dx]; i: [dtype, rows, M]; f: [eps]
void rmsNorm(Context& c, const Args& a) {
  int dt = (int)a.i.at(0);
  int64_t rows = a.i.at(1), M = a.i.at(2);
  float eps = (float)a.f.at(0);
  if (rows * M == 0) return;
  if (a.p.size() == 2) {
    LTS_DISPATCH_FLOAT(dt, T, rmsNormKernel<T><<<(unsigned)rows, THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), M, eps));
  } else {
    LTS_DISPATCH_FLOAT(dt, T, rmsNormBackwardKernel<T><<<(unsigned)rows, THREADS, 0, c.stream>>>(a.ptr<T>(0), a.ptr<T>(1), a.ptr<T>(2), M, eps));
  }
  LTS_CHECK(cudaGetLastError(), "rmsNorm kernel launch");
}

}  // namespace

void registerNn(Registry& r) {
  r["softmax"] = softmax;
  r["xent"] = xent;
  r["xentBackward"] = xentBackward;
  r["rmsNorm"] = rmsNorm;
}

}  // namespace lts
