// Lightning Attention, version 1: the readable GPU reference. Three kinds of kernel, each one
// launch over every (chunk, batch·head) at once, so a batch of 1 still fills the GPU:
//   chunkStates  L_c = Σ_j w_j a_jᵀ b_j                       (a chunk's own contribution to the state)
//   scan         S_in(c) = λ^{m_{c−1}} S_in(c−1) + L_{c−1}     (sequential over chunks, parallel over D·E)
//   chunkOut     out_j = Σ_s λ^{|j−s|} (·,·) c_s + w_j u_j S'  (masked left product + right product)
// Forward and both backward sweeps (docs/ALGORITHM.md B.2) are these three with different operands.
// Slow by design next to version 2 (no tensor cores, operands re-read from L2), but exact:
// f32 inputs accumulate in double so the f32 result is the float64 result rounded.
#include "lightning.cuh"

namespace lts {
namespace {

constexpr int C = 64;

template <class Acc>
__device__ __forceinline__ Acc decay(float slope, int n) { return exp(-(Acc)slope * (Acc)n); }

// a: (BH, T, P), b: (BH, T, X) → L: (BH, NC, P, X); w_j = λ^{m−1−j} (forward: a = k, b = v) or
// λ^{j+1} (backward: a = q, b = dO), j the position in a chunk of m tokens
template <class T, class Acc>
__global__ void chunkStatesKernel(const T* a, const T* b, Acc* L, int Tn, int P, int X, int H, const float* slopes, bool forward) {
  __shared__ float as[16][C + 1], bs[16][C + 1];  // 16 rows × up to 64 columns per pass
  int c = blockIdx.x, bh = blockIdx.y, NC = gridDim.x;
  int t0 = c * C, m = min(C, Tn - t0);
  float slope = slopes[bh % H];
  const T* ab = a + ((int64_t)bh * Tn + t0) * P;
  const T* bb = b + ((int64_t)bh * Tn + t0) * X;
  Acc* out = L + ((int64_t)bh * NC + c) * P * X;
  // Tiles of 64 × 64 (p, x); each thread holds 16 outputs of a tile.
  for (int p0 = 0; p0 < P; p0 += C)
    for (int x0 = 0; x0 < X; x0 += C) {
      Acc acc[16] = {};
      for (int j0 = 0; j0 < m; j0 += 16) {
        __syncthreads();
        for (int e = threadIdx.x; e < 16 * C; e += blockDim.x) {
          int jj = e / C, col = e % C, j = j0 + jj;
          as[jj][col] = j < m && p0 + col < P ? toF(ab[(int64_t)j * P + p0 + col]) : 0.0f;
          bs[jj][col] = j < m && x0 + col < X ? toF(bb[(int64_t)j * X + x0 + col]) : 0.0f;
        }
        __syncthreads();
        for (int jj = 0; jj < 16 && j0 + jj < m; jj++) {
          int j = j0 + jj;
          Acc w = decay<Acc>(slope, forward ? m - 1 - j : j + 1);
          for (int r = 0; r < 16; r++) {
            int e = threadIdx.x + r * blockDim.x, pp = e / C, xx = e % C;
            acc[r] += w * (Acc)as[jj][pp] * (Acc)bs[jj][xx];
          }
        }
      }
      for (int r = 0; r < 16; r++) {
        int e = threadIdx.x + r * blockDim.x, pp = p0 + e / C, xx = x0 + e % C;
        if (pp < P && xx < X) out[(int64_t)pp * X + xx] = acc[r];
      }
    }
}

// L: (BH, NC, P·X), in place: chunk c's entry becomes the state entering it (forward: from the
// left, starting at init; reverse: from the right, starting at init = dS_final). final: (BH, P·X).
template <class Acc>
__global__ void scanKernel(Acc* L, const float* init, float* fin, int NC, int Tn, int PX, int H, const float* slopes, bool reverse) {
  int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  int bh = blockIdx.y;
  if (idx >= PX) return;
  float slope = slopes[bh % H];
  Acc S = init ? (Acc)init[(int64_t)bh * PX + idx] : (Acc)0;
  Acc full = decay<Acc>(slope, C);
  for (int s = 0; s < NC; s++) {
    int c = reverse ? NC - 1 - s : s;
    int m = min(C, Tn - c * C);
    Acc* at = L + ((int64_t)bh * NC + c) * PX + idx;
    Acc local = *at;
    *at = S;
    S = (m == C ? full : decay<Acc>(slope, m)) * S + local;
  }
  if (fin) fin[(int64_t)bh * PX + idx] = (float)S;
}

// out_j[x] = Σ_s M(j, s) c_s[x] + w_j Σ_y u_j[y] S'[y, x] within each chunk, with
//   causal:      M(j, s) = λ^{j−s} (a_j·b_s) for s ≤ j,  u_j = a_j,  w_j = λ^{j+1}
//   anti-causal: M(j, s) = λ^{s−j} (a_s·b_j) for s ≥ j,  u_j = b_j,  w_j = λ^{m−1−j}
// a, b: (BH, T, P), cv: (BH, T, X), S: (BH, NC, ·) entering state, S'[y, x] = S[y·X + x] or S[x·P + y]
// (transS) → out: (BH, T, X)
template <class T, class Acc>
__global__ void chunkOutKernel(const T* a, const T* b, const T* cv, const Acc* S, T* out, int Tn, int P, int X, int H, const float* slopes,
                               bool causal, bool transS) {
  __shared__ Acc M[C][C + 1];
  int c = blockIdx.x, bh = blockIdx.y, NC = gridDim.x;
  int t0 = c * C, m = min(C, Tn - t0);
  float slope = slopes[bh % H];
  const T* ab = a + ((int64_t)bh * Tn + t0) * P;
  const T* bb = b + ((int64_t)bh * Tn + t0) * P;
  const T* cb = cv + ((int64_t)bh * Tn + t0) * X;
  const Acc* Sb = S + ((int64_t)bh * NC + c) * P * X;
  T* ob = out + ((int64_t)bh * Tn + t0) * X;
  for (int e = threadIdx.x; e < C * C; e += blockDim.x) {
    int j = e / C, s = e % C;
    Acc val = 0;
    if (j < m && s < m && (causal ? s <= j : s >= j)) {
      const T* u = causal ? ab + (int64_t)j * P : ab + (int64_t)s * P;
      const T* w = causal ? bb + (int64_t)s * P : bb + (int64_t)j * P;
      Acc dot = 0;
      for (int p = 0; p < P; p++) dot += (Acc)toF(u[p]) * (Acc)toF(w[p]);
      val = dot * decay<Acc>(slope, causal ? j - s : s - j);
    }
    M[j][s] = val;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < m * X; e += blockDim.x) {
    int j = e / X, x = e % X;
    Acc acc = 0;
    for (int s = causal ? 0 : j; s <= (causal ? j : m - 1); s++) acc += M[j][s] * (Acc)toF(cb[(int64_t)s * X + x]);
    const T* u = (causal ? ab : bb) + (int64_t)j * P;
    Acc st = 0;
    for (int y = 0; y < P; y++) st += (Acc)toF(u[y]) * Sb[transS ? (int64_t)x * P + y : (int64_t)y * X + x];
    acc += st * decay<Acc>(slope, causal ? j + 1 : m - 1 - j);
    ob[(int64_t)j * X + x] = fromF<T>((float)acc);
  }
}

template <class T, class Acc>
struct V1 {
  Context& c;
  LightningDims d;
  const float* slopes;
  int NC() const { return (d.T + C - 1) / C; }

  Acc* states(const void* a, const void* b, int P, int X, bool forward) {
    Acc* L = (Acc*)c.scratch((size_t)d.BH() * NC() * P * X * sizeof(Acc));
    chunkStatesKernel<T, Acc><<<dim3(NC(), d.BH()), 256, 0, c.stream>>>((const T*)a, (const T*)b, L, d.T, P, X, d.H, slopes, forward);
    LTS_CHECK(cudaGetLastError(), "lightning chunkStates launch");
    return L;
  }
  void scan(Acc* L, const float* init, float* fin, int PX, bool reverse) {
    scanKernel<Acc><<<dim3((PX + 255) / 256, d.BH()), 256, 0, c.stream>>>(L, init, fin, NC(), d.T, PX, d.H, slopes, reverse);
    LTS_CHECK(cudaGetLastError(), "lightning scan launch");
  }
  void out(const void* a, const void* b, const void* cv, const Acc* S, void* o, int P, int X, bool causal, bool transS) {
    chunkOutKernel<T, Acc><<<dim3(NC(), d.BH()), 256, 0, c.stream>>>((const T*)a, (const T*)b, (const T*)cv, S, (T*)o, d.T, P, X, d.H, slopes,
                                                                       causal, transS);
    LTS_CHECK(cudaGetLastError(), "lightning chunkOut launch");
  }
};

template <class T, class Acc>
void forward(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0, void* o, float* Sf) {
  V1<T, Acc> w{c, d, slopes};
  Acc* L = w.states(k, v, d.D, d.E, true);
  w.scan(L, S0, Sf, d.D * d.E, false);
  w.out(q, k, v, L, o, d.D, d.E, true, false);
  c.release(L);
}

template <class T, class Acc>
void backward(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const void* dO, const float* dSf,
              const float* S0, void* dq, void* dk, void* dv, float* dS0) {
  V1<T, Acc> w{c, d, slopes};
  Acc* L = w.states(k, v, d.D, d.E, true);
  w.scan(L, S0, nullptr, d.D * d.E, false);
  w.out(dO, v, k, L, dq, d.E, d.D, true, true);  // dq_j = Σ λ^{j−s}(dO_j·v_s) k_s + λ^{j+1} dO_j Sᵀ
  c.release(L);
  Acc* G = w.states(q, dO, d.D, d.E, false);
  w.scan(G, dSf, dS0, d.D * d.E, true);
  w.out(dO, v, q, G, dk, d.E, d.D, false, true);   // dk_j = Σ λ^{s−j}(dO_s·v_j) q_s + λ^{m−1−j} G v_jᵀ
  w.out(q, k, dO, G, dv, d.D, d.E, false, false);  // dv_j = Σ λ^{s−j}(q_s·k_j) dO_s + λ^{m−1−j} k_j G
  c.release(G);
}

}  // namespace

void lightningForwardV1(Context& c, int dt, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0,
                        void* o, float* Sf) {
  if (dt == F32) forward<float, double>(c, d, q, k, v, slopes, S0, o, Sf);
  else if (dt == F16) forward<__half, float>(c, d, q, k, v, slopes, S0, o, Sf);
  else forward<__nv_bfloat16, float>(c, d, q, k, v, slopes, S0, o, Sf);
}

void lightningBackwardV1(Context& c, int dt, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const void* dO,
                         const float* dSf, const float* S0, void* dq, void* dk, void* dv, float* dS0) {
  if (dt == F32) backward<float, double>(c, d, q, k, v, slopes, dO, dSf, S0, dq, dk, dv, dS0);
  else if (dt == F16) backward<__half, float>(c, d, q, k, v, slopes, dO, dSf, S0, dq, dk, dv, dS0);
  else backward<__nv_bfloat16, float>(c, d, q, k, v, slopes, dO, dSf, S0, dq, dk, dv, dS0);
}

}  // namespace lts
