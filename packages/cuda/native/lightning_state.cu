// `lightningState`: the state a span of T tokens adds from zero, S = Σ_t w_t k_tᵀ v_t with
// w_t = λ^{T−1−t} (or λ^{t+1} reversed), for k (B, H, T, D), v (B, H, T, E), slopes f32 (H);
// S is f32 (B, H, D, E). Sequence-parallel attention computes it once per layer and direction
// (packages/parallel/src/sequence-parallel.ts): it reads k and v once and writes nothing per token.
//
// Tensor-core path (bf16/f16, D and E multiples of 8, 16-byte aligned rows): a CTA of 4 warps owns
// a 64 × 64 tile of S and one segment of the span; 64-token stages of K and V go to shared memory by
// cp.async, STAGES deep; per 16 tokens each warp loads Kᵀ (ldmatrix.trans) for its 16 rows, scales it
// by w_t in f32 and rounds it back to the input dtype (the chunked kernel's rounding of its decayed
// keys), loads V (ldmatrix.trans) and runs 8 mma.sync for its 16 × 64 of the tile. Rows and columns past T, D or E
// are zero-filled (their weight is 0, so a row past T adds nothing). Segments of one (b, h) write
// their partial S to scratch, summed in segment order by a second kernel: the same bits every run.
//
// The plain twin (any D, E; also f32): one thread per (d, e) of a segment, the same weights and
// roundings, in a token loop. The GPU tests compare both against float64.
#include <cstring>

#include "device.cuh"
#include "mma.cuh"

namespace lts {
namespace {

constexpr int TILE = 64;      // S rows (d) and columns (e) per CTA
constexpr int CHUNK = 64;     // tokens per pipeline stage
constexpr int STAGES = 4;
constexpr int STRIDE = TILE + 8;  // padded row (elements) against ldmatrix bank conflicts
constexpr int THREADS = 128;
constexpr int STAGE_ELEMS = 2 * CHUNK * STRIDE;  // K, then V
constexpr size_t SMEM = (size_t)STAGES * STAGE_ELEMS * 2;

struct StateArgs {
  const void* k;
  const void* v;
  const float* slopes;
  float* out;  // S (one segment), or the segments' partials [nseg][BH][D][E]
  int T, D, E, H, segLen;
  bool reverse;
};

// exp(−s·age) for token t of the span, as exp2 of a premultiplied exponent; 0 past its end.
__device__ __forceinline__ float weight(const StateArgs& a, float nl2, int t) {
  if (t >= a.T) return 0.0f;
  return exp2f(nl2 * (float)(a.reverse ? t + 1 : a.T - 1 - t));
}

template <class X>
__device__ __forceinline__ uint32_t scalePair(uint32_t packed, float w0, float w1) {
  if constexpr (std::is_same_v<X, __half>) {
    __half2 h = *reinterpret_cast<__half2*>(&packed);
    return packF16(__low2float(h) * w0, __high2float(h) * w1);
  } else {
    __nv_bfloat162 h = *reinterpret_cast<__nv_bfloat162*>(&packed);
    return packBf16(__low2float(h) * w0, __high2float(h) * w1);
  }
}

// grid (tiles of S, B·H, segments); block THREADS; dynamic smem SMEM. Warp w owns rows 16w … 16w + 15
// of the tile and all 64 columns, so the A fragment it scales by w_t serves 8 mma (the kernel is
// bound by instructions issued, not by bytes: Nsight Compute, KERNELS.md).
template <class X>
__global__ void __launch_bounds__(THREADS) stateMmaKernel(const StateArgs a) {
  extern __shared__ __align__(16) unsigned char smemRaw[];
  X* stages = reinterpret_cast<X*>(smemRaw);
  const int tilesE = (a.E + TILE - 1) / TILE;
  const int d0 = (blockIdx.x / tilesE) * TILE, e0 = (blockIdx.x % tilesE) * TILE;
  const int bh = blockIdx.y, seg = blockIdx.z;
  const int t0 = seg * a.segLen, t1 = min(a.T, t0 + a.segLen);
  const float nl2 = -a.slopes[bh % a.H] * 1.4426950408889634f;  // −s·log₂e
  const X* k = reinterpret_cast<const X*>(a.k) + (int64_t)bh * a.T * a.D;
  const X* v = reinterpret_cast<const X*>(a.v) + (int64_t)bh * a.T * a.E;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c4 = lane & 3;

  // Loads: thread i copies 16 bytes at column (i % 8)·8 of rows i / 8 + 16q (q = 0…3) of K and of V.
  const int lrow = threadIdx.x >> 3, lcol = (threadIdx.x & 7) * 8;
  const bool kIn = d0 + lcol < a.D, vIn = e0 + lcol < a.E;
  const X* kSrc = k + (kIn ? d0 + lcol : 0);
  const X* vSrc = v + (vIn ? e0 + lcol : 0);
  auto load = [&](int stage, int tBase) {
    X* Ks = stages + stage * STAGE_ELEMS;
    X* Vs = Ks + CHUNK * STRIDE;
#pragma unroll
    for (int q = 0; q < CHUNK / 16; q++) {
      const int row = lrow + 16 * q, t = tBase + row;
      const bool in = t < t1;
      const int64_t at = in ? t : t0;
      cpAsync16(Ks + row * STRIDE + lcol, kSrc + at * a.D, in && kIn ? 16 : 0);
      cpAsync16(Vs + row * STRIDE + lcol, vSrc + at * a.E, in && vIn ? 16 : 0);
    }
  };

  float acc[8][4] = {};
  const int chunks = (t1 - t0 + CHUNK - 1) / CHUNK;
#pragma unroll
  for (int p = 0; p < STAGES - 1; p++) {
    if (p < chunks) load(p, t0 + p * CHUNK);
    cpAsyncCommit();
  }
  const int m = lane >> 3, r = lane & 7;
  for (int ch = 0; ch < chunks; ch++) {
    cpAsyncWait<STAGES - 2>();
    __syncthreads();
    // Refill the stage the previous iteration finished with (every warp is past it: the barrier above).
    if (ch + STAGES - 1 < chunks) load((ch + STAGES - 1) % STAGES, t0 + (ch + STAGES - 1) * CHUNK);
    cpAsyncCommit();
    const X* Ks = stages + (ch % STAGES) * STAGE_ELEMS;
    const X* Vs = Ks + CHUNK * STRIDE;
    const int tc = t0 + ch * CHUNK;
#pragma unroll
    for (int ks = 0; ks < CHUNK / 16; ks++) {
      const int tk = ks * 16;
      // Aᵀ = K rows (tokens) as stored: matrices (t 0–7, d 0–7), (t 0–7, d 8–15), (t 8–15, d 0–7),
      // (t 8–15, d 8–15); this lane's tokens are 2c, 2c+1 (a0, a1) and 2c+8, 2c+9 (a2, a3).
      uint32_t af[4];
      ldsm4t(af, Ks + (tk + (m >> 1) * 8 + r) * STRIDE + warp * 16 + (m & 1) * 8);
      const int tl = tc + tk + 2 * c4;
      const float w0 = weight(a, nl2, tl), w1 = weight(a, nl2, tl + 1), w8 = weight(a, nl2, tl + 8), w9 = weight(a, nl2, tl + 9);
      af[0] = scalePair<X>(af[0], w0, w1);
      af[1] = scalePair<X>(af[1], w0, w1);
      af[2] = scalePair<X>(af[2], w8, w9);
      af[3] = scalePair<X>(af[3], w8, w9);
#pragma unroll
      for (int np = 0; np < 4; np++) {
        // B = V rows (tokens): matrices (t 0–7, e 0–7), (t 8–15, e 0–7), (t 0–7, e 8–15), (t 8–15, e 8–15).
        uint32_t bf[4];
        ldsm4t(bf, Vs + (tk + (m & 1) * 8 + r) * STRIDE + np * 16 + (m >> 1) * 8);
        mma<X>(acc[2 * np], af, bf[0], bf[1]);
        mma<X>(acc[2 * np + 1], af, bf[2], bf[3]);
      }
    }
  }
  cpAsyncWait<0>();

  float* out = a.out + ((int64_t)seg * gridDim.y + bh) * a.D * a.E;
#pragma unroll
  for (int nt = 0; nt < 8; nt++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int d = d0 + warp * 16 + g + h * 8, e = e0 + nt * 8 + 2 * c4;
      if (d >= a.D) continue;
      if (e < a.E) out[(int64_t)d * a.E + e] = acc[nt][2 * h];
      if (e + 1 < a.E) out[(int64_t)d * a.E + e + 1] = acc[nt][2 * h + 1];
    }
}

// The plain twin: thread (d, e) of segment `seg`, grid (⌈D·E/256⌉, B·H, segments).
template <class X>
__global__ void statePlainKernel(const StateArgs a) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= a.D * a.E) return;
  const int d = i / a.E, e = i % a.E, bh = blockIdx.y, seg = blockIdx.z;
  const int t0 = seg * a.segLen, t1 = min(a.T, t0 + a.segLen);
  const float nl2 = -a.slopes[bh % a.H] * 1.4426950408889634f;
  const X* k = reinterpret_cast<const X*>(a.k) + (int64_t)bh * a.T * a.D;
  const X* v = reinterpret_cast<const X*>(a.v) + (int64_t)bh * a.T * a.E;
  float acc = 0.0f;
  for (int t = t0; t < t1; t++) {
    const float kw = toF(fromF<X>(toF(k[(int64_t)t * a.D + d]) * weight(a, nl2, t)));
    acc = fmaf(kw, toF(v[(int64_t)t * a.E + e]), acc);
  }
  a.out[((int64_t)seg * gridDim.y + bh) * a.D * a.E + i] = acc;
}

// out[i] = Σ_seg parts[seg][i], in segment order.
__global__ void sumSegmentsKernel(const float* parts, float* out, int64_t n, int nseg) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float x = 0.0f;
    for (int s = 0; s < nseg; s++) x += parts[(int64_t)s * n + i];
    out[i] = x;
  }
}

// LIGHTNING_CUDA_STATE=plain runs the plain twin (read at each call, for tests and benches).
bool plainAsked() {
  const char* v = getenv("LIGHTNING_CUDA_STATE");
  if (!v || !*v || strcmp(v, "mma") == 0) return false;
  if (strcmp(v, "plain") == 0) return true;
  throw std::runtime_error(std::string("LIGHTNING_CUDA_STATE: expected mma or plain, got '") + v + "'");
}

template <class X>
int mmaBlocksPerSm() {
  static PerDevice<int> n;
  return n.get([] {
    LTS_CHECK(cudaFuncSetAttribute(stateMmaKernel<X>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SMEM), "lightningState smem attribute");
    int b = 0;
    LTS_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, stateMmaKernel<X>, THREADS, SMEM), "lightningState occupancy");
    return std::max(1, b);
  });
}

// p: [k, v, slopes, state]; i: [dtype, B, H, T, D, E, reverse]
void lightningState(Context& c, const Args& args) {
  Reader r{args.i};
  const int dt = (int)r.next();
  const int B = (int)r.next(), H = (int)r.next(), T = (int)r.next(), D = (int)r.next(), E = (int)r.next();
  const bool reverse = r.next() != 0;
  const int BH = B * H;
  float* out = args.ptr<float>(3);
  if (BH == 0 || D == 0 || E == 0) return;
  if (T == 0) {
    LTS_CHECK(cudaMemsetAsync(out, 0, (size_t)BH * D * E * 4, c.stream), "lightningState memset");
    return;
  }
  const bool aligned = ((args.p.at(0) | args.p.at(1)) & 15) == 0;
  const bool mma = dt != F32 && D % 8 == 0 && E % 8 == 0 && aligned && !plainAsked();
  const int tiles = mma ? ((D + TILE - 1) / TILE) * ((E + TILE - 1) / TILE) : (D * E + 255) / 256;
  // As many segments as fill one wave of CTAs exactly (a partial second wave would cost a whole
  // CTA's time: at B·H = 8, D = E = 128, 25 segments made 800 CTAs, 2.02 waves of 396, 0.34 ms
  // where one wave of 384 reads k and v once in ~0.1), each at least 256 tokens long.
  const int perSm = mma ? (dt == F16 ? mmaBlocksPerSm<__half>() : mmaBlocksPerSm<__nv_bfloat16>()) : 4;
  const int64_t slots = (int64_t)c.smCount * perSm;
  int nseg = (int)std::max<int64_t>(1, std::min<int64_t>(slots / ((int64_t)tiles * BH), (T + 255) / 256));
  // A forced count (LIGHTNING_CUDA_STATE_SEGMENTS, read at each call) for experiments.
  if (const char* f = getenv("LIGHTNING_CUDA_STATE_SEGMENTS")) nseg = std::max(1, std::min((T + CHUNK - 1) / CHUNK, atoi(f)));
  const int segLen = ((T + nseg - 1) / nseg + CHUNK - 1) / CHUNK * CHUNK;
  nseg = (T + segLen - 1) / segLen;
  const int64_t n = (int64_t)BH * D * E;
  float* parts = nseg > 1 ? (float*)c.scratch((size_t)nseg * n * sizeof(float)) : out;
  StateArgs a{args.ptr<void>(0), args.ptr<void>(1), args.ptr<float>(2), parts, T, D, E, H, segLen, reverse};
  dim3 grid(tiles, BH, nseg);
  if (mma) {
    if (dt == F16) stateMmaKernel<__half><<<grid, THREADS, SMEM, c.stream>>>(a);
    else stateMmaKernel<__nv_bfloat16><<<grid, THREADS, SMEM, c.stream>>>(a);
  } else {
    LTS_DISPATCH_FLOAT(dt, X, statePlainKernel<X><<<grid, 256, 0, c.stream>>>(a));
  }
  LTS_CHECK(cudaGetLastError(), "lightningState kernel launch");
  if (nseg > 1) {
    const int blocks = (int)std::min<int64_t>((n + 255) / 256, (int64_t)c.smCount * 8);
    sumSegmentsKernel<<<blocks, 256, 0, c.stream>>>(parts, out, n, nseg);
    LTS_CHECK(cudaGetLastError(), "lightningState segment sum launch");
    c.release(parts);
  }
}

}  // namespace

void registerLightningState(Registry& r) { r["lightningState"] = lightningState; }

}  // namespace lts
