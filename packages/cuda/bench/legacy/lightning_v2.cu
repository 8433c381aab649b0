// Lightning Attention forward, version 2: bf16 tensor cores (mma.sync m16n8k16, f32 accumulation),
// cp.async double buffering, and a sequence split for small batches.
//
// One CTA (4 warps) walks the chunks (C = 64 tokens) of one segment of one (b·h) for one 64-wide
// slice of E, holding the D×64 state in f32 registers (each warp 32 rows of D). Per chunk, warp w
// owns query rows 16w..16w+15:
//   O  = λ^{i+1} · (Q S)                    Q from shared, S as a bf16 copy in shared
//   P  = (Q Kᵀ) ⊙ M,  M_ij = λ^{i−j} [j ≤ i]  kept in registers: the C fragments are the A fragments
//   O += P V                                 then O goes out through shared memory, 16 B per thread
//   S  = λ^m S + Kᵀ (w ⊙ V),  w_j = λ^{m−1−j}
// Small batches (too few (b·h, E-slice) pairs to fill the GPU) split T into segments: phase A
// computes each segment's own state (the last step only), a scan gives each segment its entering
// state, and phase C runs the full loop per segment from there. K and V are then read twice.
// Letters: B batch, H heads, T time, D = 128, E value dim (a multiple of 64), C = 64.
#include <cstdlib>

#include "lightning_legacy.cuh"
#include "mma.cuh"

namespace lts {
namespace {

constexpr int C = 64, D = 128, ET = 64, WARPS = 4, THREADS = WARPS * 32;
constexpr int QS = D + 8, VS = ET + 8;  // padded row strides (elements) against ldmatrix bank conflicts
constexpr int STAGE = 2 * C * QS + C * VS;  // Q, K, V of one chunk
constexpr size_t SMEM = (2 * STAGE + D * VS) * sizeof(__nv_bfloat16) + (C + 1) * sizeof(float);

struct Params {
  const __nv_bfloat16 *q, *k, *v;
  const float* slopes;
  const float* Sin;  // (BH, nseg, D, E) entering state per segment, or (BH, D, E) when nseg = 1, or null
  __nv_bfloat16* o;
  float* Sout;  // phase C: final state (BH, D, E), written by the last segment; phase A: (BH, nseg, D, E)
  int T, E, H, nseg, chunksPerSeg;
  bool reverse;  // walk time backwards (t ↦ T−1−t in every load and store): the backward's anti-causal passes
};

// q, k: (BH, T, D), v: (BH, T, E) bf16 → o: (BH, T, E) bf16 and state f32; grid (E/64, BH, nseg)
template <bool STATE_ONLY>
__global__ void __launch_bounds__(THREADS, 2) forwardKernel(Params p) {
  extern __shared__ __align__(16) unsigned char smem[];
  auto* stages = reinterpret_cast<__nv_bfloat16*>(smem);
  __nv_bfloat16* Sb = stages + 2 * STAGE;  // (D, ET) bf16 copy of the state
  float* pw = reinterpret_cast<float*>(Sb + D * VS);  // λ^n, n = 0..C
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
  const int e0 = blockIdx.x * ET, bh = blockIdx.y, seg = blockIdx.z;
  const int T = p.T, E = p.E;
  const float slope = p.slopes[bh % p.H];
  if (threadIdx.x <= C) pw[threadIdx.x] = expf(-slope * (float)threadIdx.x);
  const int c0 = seg * p.chunksPerSeg;
  const int nChunks = min(p.chunksPerSeg, (T + C - 1) / C - c0);
  const __nv_bfloat16* qb = p.q + (size_t)bh * T * D;
  const __nv_bfloat16* kb = p.k + (size_t)bh * T * D;
  const __nv_bfloat16* vb = p.v + (size_t)bh * T * E + e0;

  // The state: warp w owns rows 32w..32w+31 of D as 2 m-tiles × 8 n-tiles of C fragments.
  float S[2][8][4];
  const float* sin = p.Sin ? p.Sin + ((size_t)bh * (STATE_ONLY ? 1 : p.nseg) + (STATE_ONLY ? 0 : seg)) * D * E : nullptr;
  if (STATE_ONLY) sin = nullptr;
#pragma unroll
  for (int mt = 0; mt < 2; mt++)
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
      for (int r = 0; r < 4; r++) {
        int d = warp * 32 + mt * 16 + g + (r >> 1) * 8, e = e0 + nt * 8 + 2 * t4 + (r & 1);
        S[mt][nt][r] = sin ? sin[(size_t)d * E + e] : 0.0f;
      }

  auto load = [&](int chunk, int stage) {
    __nv_bfloat16* Qs = stages + stage * STAGE;
    __nv_bfloat16* Ks = Qs + C * QS;
    __nv_bfloat16* Vs = Ks + C * QS;
    int t0 = chunk * C;
    for (int x = threadIdx.x; x < C * (D / 8); x += THREADS) {
      int row = x / (D / 8), col = (x % (D / 8)) * 8;
      bool in = t0 + row < T;
      size_t off = (size_t)(in ? (p.reverse ? T - 1 - t0 - row : t0 + row) : 0) * D + col;
      if (!STATE_ONLY) cpAsync16(Qs + row * QS + col, qb + off, in ? 16 : 0);
      cpAsync16(Ks + row * QS + col, kb + off, in ? 16 : 0);
    }
    for (int x = threadIdx.x; x < C * (ET / 8); x += THREADS) {
      int row = x / (ET / 8), col = (x % (ET / 8)) * 8;
      bool in = t0 + row < T;
      cpAsync16(Vs + row * VS + col, vb + (size_t)(in ? (p.reverse ? T - 1 - t0 - row : t0 + row) : 0) * E + col, in ? 16 : 0);
    }
    cpAsyncCommit();
  };

  auto storeState = [&]() {
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          int d = warp * 32 + mt * 16 + g + h * 8, e = nt * 8 + 2 * t4;
          *reinterpret_cast<uint32_t*>(Sb + d * VS + e) = packBf16(S[mt][nt][2 * h], S[mt][nt][2 * h + 1]);
        }
  };

  if (nChunks > 0) load(c0, 0);
  if (!STATE_ONLY) storeState();
  for (int ci = 0; ci < nChunks; ci++) {
    const int chunk = c0 + ci, stage = ci & 1, t0 = chunk * C, m = min(C, T - t0);
    if (ci + 1 < nChunks) {
      load(chunk + 1, stage ^ 1);
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();
    __nv_bfloat16* Qs = stages + stage * STAGE;
    __nv_bfloat16* Ks = Qs + C * QS;
    __nv_bfloat16* Vs = Ks + C * QS;
    const int i0 = warp * 16;  // this warp's query rows

    if (!STATE_ONLY) {
      float O[8][4] = {}, P[8][4] = {};
      // O = Q S and P = Q Kᵀ share the A fragments of Q.
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        uint32_t a[4];
        ldsm4(a, Qs + (i0 + (lane & 15)) * QS + kk * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int np = 0; np < 4; np++) {
          uint32_t b[4];
          ldsm4t(b, Sb + (kk * 16 + (lane & 15)) * VS + np * 16 + (lane >> 4) * 8);
          mma16816(O[2 * np], a, b[0], b[1]);
          mma16816(O[2 * np + 1], a, b[2], b[3]);
          uint32_t kf[4];
          ldsm4(kf, Ks + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * QS + kk * 16 + ((lane >> 3) & 1) * 8);
          mma16816(P[2 * np], a, kf[0], kf[1]);
          mma16816(P[2 * np + 1], a, kf[2], kf[3]);
        }
      }
      // Decay: O rows by λ^{i+1}; P by the causal decay mask.
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
          int i = i0 + g + (r >> 1) * 8, j = nt * 8 + 2 * t4 + (r & 1);
          O[nt][r] *= pw[i + 1];
          P[nt][r] = j <= i ? P[nt][r] * pw[i - j] : 0.0f;
        }
      // O += P V, with P's C fragments reused as A fragments (two n-tiles make one k-step).
#pragma unroll
      for (int kk = 0; kk < C / 16; kk++) {
        uint32_t a[4] = {packBf16(P[2 * kk][0], P[2 * kk][1]), packBf16(P[2 * kk][2], P[2 * kk][3]), packBf16(P[2 * kk + 1][0], P[2 * kk + 1][1]),
                         packBf16(P[2 * kk + 1][2], P[2 * kk + 1][3])};
#pragma unroll
        for (int np = 0; np < 4; np++) {
          uint32_t b[4];
          ldsm4t(b, Vs + (kk * 16 + (lane & 15)) * VS + np * 16 + (lane >> 4) * 8);
          mma16816(O[2 * np], a, b[0], b[1]);
          mma16816(O[2 * np + 1], a, b[2], b[3]);
        }
      }
      // Stage O in this chunk's Q buffer (each warp only its own rows, which only it read), then
      // write 16 B per thread.
      __syncwarp();
      __nv_bfloat16* Os = Qs;
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
          *reinterpret_cast<uint32_t*>(Os + (i0 + g + h * 8) * QS + nt * 8 + 2 * t4) = packBf16(O[nt][2 * h], O[nt][2 * h + 1]);
      __syncwarp();
      for (int x = lane; x < 16 * (ET / 8); x += 32) {
        int row = i0 + x / (ET / 8), col = (x % (ET / 8)) * 8;
        int t = p.reverse ? T - 1 - t0 - row : t0 + row;
        if (row < m) *reinterpret_cast<uint4*>(p.o + ((size_t)bh * T + t) * E + e0 + col) = *reinterpret_cast<uint4*>(Os + row * QS + col);
      }
    }
    // w ⊙ V overwrites V in place: every reader of V (above) is done once all warps pass this barrier.
    __syncthreads();
    for (int x = threadIdx.x; x < C * (ET / 2); x += THREADS) {
      int row = x / (ET / 2), col = (x % (ET / 2)) * 2;
      auto* at = reinterpret_cast<__nv_bfloat162*>(Vs + row * VS + col);
      float w = row < m ? pw[m - 1 - row] : 0.0f;
      float2 f = __bfloat1622float2(*at);
      *at = __floats2bfloat162_rn(f.x * w, f.y * w);
    }
    __syncthreads();
    // S = λ^m S + Kᵀ (w ⊙ V): A = Kᵀ through ldmatrix.trans of K, B = w ⊙ V.
    float decay = pw[m];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int r = 0; r < 4; r++) S[mt][nt][r] *= decay;
#pragma unroll
    for (int kk = 0; kk < C / 16; kk++) {
      uint32_t a[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; mt++)
        ldsm4t(a[mt], Ks + (kk * 16 + (lane & 7) + ((lane >> 4) << 3)) * QS + warp * 32 + mt * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
      for (int np = 0; np < 4; np++) {
        uint32_t b[4];
        ldsm4t(b, Vs + (kk * 16 + (lane & 15)) * VS + np * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
          mma16816(S[mt][2 * np], a[mt], b[0], b[1]);
          mma16816(S[mt][2 * np + 1], a[mt], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // all reads of Sb and this stage are done before they are rewritten
    if (!STATE_ONLY) storeState();
  }

  float* out = nullptr;
  if (STATE_ONLY) out = p.Sout + ((size_t)bh * p.nseg + seg) * D * E;
  else if (seg == p.nseg - 1) out = p.Sout + (size_t)bh * D * E;
  if (out) {
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
      for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          int d = warp * 32 + mt * 16 + g + h * 8, e = e0 + nt * 8 + 2 * t4;
          *reinterpret_cast<float2*>(out + (size_t)d * E + e) = make_float2(S[mt][nt][2 * h], S[mt][nt][2 * h + 1]);
        }
  }
}

// L: (BH, nseg, D·E) segment-local states, in place → the state entering each segment (from S0).
__global__ void segmentScanKernel(float* L, const float* S0, int nseg, int segTokens, int T, int DE, int H, const float* slopes) {
  int idx = blockIdx.x * blockDim.x + threadIdx.x, bh = blockIdx.y;
  if (idx >= DE) return;
  float slope = slopes[bh % H];
  float S = S0 ? S0[(size_t)bh * DE + idx] : 0.0f;
  for (int s = 0; s < nseg; s++) {
    float* at = L + ((size_t)bh * nseg + s) * DE + idx;
    float local = *at;
    *at = S;
    int len = min(segTokens, T - s * segTokens);
    S = expf(-slope * (float)len) * S + local;
  }
}

// dst (BH, X, Y) = scale_h · src (BH, Y, X) transposed, or untransposed (BH, Y, X); zeros when src is null.
// scale_h = λ_h^power (power −1: the backward's final-state gradient enters one step "early").
__global__ void prepareStateKernel(const float* src, float* dst, int Y, int X, bool transpose, int power, int H, const float* slopes) {
  int idx = blockIdx.x * blockDim.x + threadIdx.x, bh = blockIdx.y;
  if (idx >= X * Y) return;
  float scale = expf(slopes[bh % H] * (float)-power);
  int y = transpose ? idx % Y : idx / X, x = transpose ? idx / Y : idx % X;
  dst[(size_t)bh * X * Y + idx] = src ? scale * src[(size_t)bh * X * Y + (size_t)y * X + x] : 0.0f;
}

void configure() {
  static bool done = false;
  if (done) return;
  LTS_CHECK(cudaFuncSetAttribute(forwardKernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SMEM), "lightning v2 smem attribute");
  LTS_CHECK(cudaFuncSetAttribute(forwardKernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SMEM), "lightning v2 smem attribute");
  done = true;
}

// One causal pass over (q, k, v) of widths (D, D, E) from state S0 (BH, D, E) or zero: the three
// launches (segment states, scan, full loop) where the batch is too small, else one.
void pass(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0, void* o, float* Sfinal,
          bool reverse) {
  configure();
  int NC = (d.T + C - 1) / C;
  int pairs = d.BH() * (d.E / ET);
  // Split only when the pairs fill less than 3/4 of one wave (2 CTAs per SM), and then into as many
  // segments as fit in one wave: a partial second wave would cost a whole CTA's time.
  int slots = 2 * c.smCount;
  int nseg = 4 * pairs >= 3 * slots ? 1 : std::min(NC, std::max(1, slots / pairs));
  // A forced count (LIGHTNING_CUDA_LA_SEGMENTS) for experiments.
  if (const char* f = getenv("LIGHTNING_CUDA_LA_SEGMENTS")) nseg = std::max(1, std::min(NC, atoi(f)));
  int chunksPerSeg = (NC + nseg - 1) / nseg;
  nseg = (NC + chunksPerSeg - 1) / chunksPerSeg;
  Params p{(const __nv_bfloat16*)q, (const __nv_bfloat16*)k, (const __nv_bfloat16*)v, slopes, S0, (__nv_bfloat16*)o, Sfinal,
           d.T, d.E, d.H, nseg, chunksPerSeg, reverse};
  dim3 grid(d.E / ET, d.BH(), nseg);
  float* L = nullptr;
  if (nseg > 1) {
    L = (float*)c.scratch((size_t)d.BH() * nseg * D * d.E * sizeof(float));
    Params a = p;
    a.Sin = nullptr;
    a.Sout = L;
    forwardKernel<true><<<grid, THREADS, SMEM, c.stream>>>(a);
    LTS_CHECK(cudaGetLastError(), "lightning v2 segment states launch");
    segmentScanKernel<<<dim3((D * d.E + 255) / 256, d.BH()), 256, 0, c.stream>>>(L, S0, nseg, chunksPerSeg * C, d.T, D * d.E, d.H, slopes);
    LTS_CHECK(cudaGetLastError(), "lightning v2 segment scan launch");
    p.Sin = L;
  }
  forwardKernel<false><<<grid, THREADS, SMEM, c.stream>>>(p);
  LTS_CHECK(cudaGetLastError(), "lightning v2 forward launch");
  if (L) c.release(L);
}

void prepare(Context& c, LightningDims d, const float* src, float* dst, bool transpose, int power, const float* slopes) {
  prepareStateKernel<<<dim3((D * D + 255) / 256, d.BH()), 256, 0, c.stream>>>(src, dst, D, D, transpose, power, d.H, slopes);
  LTS_CHECK(cudaGetLastError(), "lightning v2 state preparation launch");
}

}  // namespace

bool lightningForwardV2Supported(int dt, LightningDims d) { return dt == BF16 && d.D == D && d.E % ET == 0 && d.T > 0; }
bool lightningBackwardV2Supported(int dt, LightningDims d) { return dt == BF16 && d.D == D && d.E == D && d.T > 0; }

void lightningForwardV2(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const float* S0, void* o,
                        float* Sfinal) {
  pass(c, d, q, k, v, slopes, S0, o, Sfinal, false);
}

// The backward as three forward passes (D = E = 128), from the token relations of docs/ALGORITHM.md B.2:
//   dq_t = dO_t S_tᵀ:  forward over (dO, v, k) from S0ᵀ; its state is Sᵀ = Σ vᵀ k.
//   dv_t = k_t G_t, dk_t = v_t G_tᵀ with G_t = Σ_{s≥t} λ^{s−t} q_sᵀ dO_s + λ^{T−1−t} dS_final: in reversed
//   time these are forwards over (k, q, dO) and (v, dO, q) from λ^{−1} dS_final (transposed for dk).
//   dS0 = λ G_0 = λ · (the dv pass's final state).
void lightningBackwardV2(Context& c, LightningDims d, const void* q, const void* k, const void* v, const float* slopes, const void* dO,
                         const float* dSf, const float* S0, void* dq, void* dk, void* dv, float* dS0) {
  size_t bytes = (size_t)d.BH() * D * D * sizeof(float);
  float *junk = (float*)c.scratch(bytes), *s0t = (float*)c.scratch(bytes), *g = (float*)c.scratch(bytes), *gt = (float*)c.scratch(bytes),
        *gfin = (float*)c.scratch(bytes);
  if (S0) prepare(c, d, S0, s0t, true, 0, slopes);
  pass(c, d, dO, v, k, slopes, S0 ? s0t : nullptr, dq, junk, false);
  prepare(c, d, dSf, g, false, -1, slopes);
  prepare(c, d, dSf, gt, true, -1, slopes);
  pass(c, d, k, q, dO, slopes, g, dv, gfin, true);
  pass(c, d, v, dO, q, slopes, gt, dk, junk, true);
  prepare(c, d, gfin, dS0, false, 1, slopes);
  for (float* x : {junk, s0t, g, gt, gfin}) c.release(x);
}

}  // namespace lts
