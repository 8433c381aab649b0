// What kernel launchers (the .cu files) and the N-API glue (addon.cc) share: the codes generated
// from TypeScript (op_codes.gen.h: dtypes, op lists, launcher names, index errors), the argument
// pack a launch receives from JavaScript, the services the runtime offers a launcher (stream,
// scratch memory, the device error flag) and checked CUDA calls.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "op_codes.gen.h"

namespace lts {

inline size_t dtypeSize(int dt) { return kDTypeBytes[dt]; }

// A 0/1 switch of the environment, read at each call so that one process can compare both sides:
// unset or empty gives `byDefault`; any value but 0 or 1 is an error naming the variable.
inline bool envSwitch(const char* var, bool byDefault) {
  const char* v = getenv(var);
  if (!v || !*v) return byDefault;
  if (strcmp(v, "1") == 0) return true;
  if (strcmp(v, "0") == 0) return false;
  throw std::runtime_error(std::string(var) + ": expected 0 or 1, got '" + v + "'");
}

struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void throwCuda(cudaError_t e, const std::string& what) {
  throw CudaError(what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

#define LTS_CHECK(call, what)                              \
  do {                                                     \
    cudaError_t lts_e_ = (call);                           \
    if (lts_e_ != cudaSuccess) ::lts::throwCuda(lts_e_, what); \
  } while (0)

// Errors that kernels find (an index out of range) cannot throw where the op was called: the
// kernel records the first one here (host memory mapped into the device), and the runtime turns
// it into a JavaScript error at the next sync point.
struct DeviceError {
  int code;      // 0: none; otherwise an ErrorOp (op_codes.gen.h)
  int position;  // flat position of the bad index
  long long value;
  long long bound;
};

// Services a launcher may use. Scratch memory comes from the caching allocator and may be
// released right after the launch is enqueued: everything runs on one stream, in order.
class Context {
 public:
  virtual ~Context() = default;
  virtual void* scratch(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  cudaStream_t stream = nullptr;
  int smCount = 0;
  int ccMajor = 0;
  DeviceError* error = nullptr;  // device-visible pointer
  bool verbose = false;
  // Set by a launcher that does not apply to its arguments and enqueued nothing (fusedLinear
  // beyond the small-M kernel): the launch then returns false and the caller runs another way.
  bool declined = false;
};

// One launch: device pointers, integers (dtype codes, dims, flags) and floats, in an order each
// launcher documents. `Reader` walks the integers.
struct Args {
  std::vector<uint64_t> p;
  std::vector<int64_t> i;
  std::vector<double> f;
  template <class T>
  T* ptr(size_t k) const { return reinterpret_cast<T*>(static_cast<uintptr_t>(p.at(k))); }
};

struct Reader {
  const std::vector<int64_t>& v;
  size_t at = 0;
  int64_t next() { return v.at(at++); }
  std::vector<int64_t> shape() {
    int64_t r = next();
    std::vector<int64_t> s;
    for (int64_t k = 0; k < r; k++) s.push_back(next());
    return s;
  }
};

inline int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

// Launchers by name, as native/*.cu register them; the names are LAUNCHERS of src/codes.ts
// (kLauncherNames), which the addon checks when it loads.
using Launcher = void (*)(Context&, const Args&);
using Registry = std::unordered_map<std::string, Launcher>;

void registerElementwise(Registry&);
void registerReduce(Registry&);
void registerMovement(Registry&);
void registerIndexing(Registry&);
void registerNn(Registry&);
void registerRandom(Registry&);
void registerMatmul(Registry&);
void registerLightning(Registry&);
void registerLightningState(Registry&);
void registerOptim(Registry&);
void registerDecode(Registry&);
void registerDecodeLayer(Registry&);
std::string cublasStatus();
// Lightning Attention: the tokens per segment of the forward's sequence split whose entering states
// the op returns for the backward (lightning.cu lightningSegmentTokens), or 0.
int lightningSegmentTokensOf(Context& c, int dtype, int B, int H, int T, int D, int E);

// Broadcast iteration over up to 8 dims with up to 4 operands (outputs included), dims merged
// where every operand is contiguous across them, so the common no-broadcast case is one dim.
constexpr int MAX_RANK = 8;
struct Index {
  int rank;
  int64_t shape[MAX_RANK];
  int64_t stride[4][MAX_RANK];
};

// Strides of `in` (right-aligned to `out`, size-1 dims broadcast with stride 0).
inline std::vector<int64_t> broadcastStrides(const std::vector<int64_t>& in, const std::vector<int64_t>& out) {
  std::vector<int64_t> st(out.size(), 0);
  int64_t s = 1;
  for (int k = (int)in.size() - 1, o = (int)out.size() - 1; k >= 0; k--, o--) {
    st[o] = in[k] == 1 ? 0 : s;
    s *= in[k];
  }
  return st;
}

inline Index makeIndex(const std::vector<int64_t>& shape, const std::vector<std::vector<int64_t>>& strides) {
  // Drop size-1 dims, then merge dim k into k+1 where stride[k] == stride[k+1] * shape[k+1] for all.
  std::vector<int64_t> sh;
  std::vector<std::vector<int64_t>> st(strides.size());
  for (size_t d = 0; d < shape.size(); d++) {
    if (shape[d] == 1) continue;
    sh.push_back(shape[d]);
    for (size_t j = 0; j < strides.size(); j++) st[j].push_back(strides[j][d]);
  }
  for (int d = (int)sh.size() - 2; d >= 0; d--) {
    bool ok = true;
    for (auto& s : st) ok = ok && s[d] == s[d + 1] * sh[d + 1];
    if (!ok) continue;
    sh[d] *= sh[d + 1];
    for (auto& s : st) {
      s[d] = s[d + 1];
      s.erase(s.begin() + d + 1);
    }
    sh.erase(sh.begin() + d + 1);
  }
  if (sh.size() > MAX_RANK) throw std::runtime_error("more than 8 non-mergeable dims");
  Index ix{};
  ix.rank = (int)sh.size();
  for (int d = 0; d < ix.rank; d++) {
    ix.shape[d] = sh[d];
    for (size_t j = 0; j < st.size(); j++) ix.stride[j][d] = st[j][d];
  }
  return ix;
}

inline unsigned blocksFor(int64_t n, int threads, int64_t cap = 1 << 20) {
  int64_t b = (n + threads - 1) / threads;
  return (unsigned)(b < 1 ? 1 : b > cap ? cap : b);
}

// A value set up once per device: kernel attributes and library handles belong to the context of
// the device that was current when they were made, and one process may drive several devices.
template <class T>
class PerDevice {
 public:
  template <class Make>
  T& get(Make make) {
    int device = 0;
    LTS_CHECK(cudaGetDevice(&device), "cudaGetDevice");
    std::lock_guard<std::mutex> lock(mu_);
    auto it = values_.find(device);
    if (it == values_.end()) it = values_.emplace(device, make()).first;
    return it->second;
  }

 private:
  std::mutex mu_;
  std::map<int, T> values_;
};

}  // namespace lts
