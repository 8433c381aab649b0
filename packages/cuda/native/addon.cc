// The N-API side of the CUDA backend: one Runtime object per backend, owning a device context,
// one stream, a caching device allocator, pinned staging buffers, timing events and the device
// error flag; `launch` runs a kernel launcher, named by its index in LAUNCHERS, with arguments
// packed by src/kernels.ts. Every CUDA failure becomes a JavaScript Error naming the CUDA error and
// the op. Every entry point makes its runtime's device current first (makeCurrent), so backends
// on several GPUs in one process keep their allocations and launches apart.
#include <dlfcn.h>
#include <napi.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "nccl.h"

namespace lts {
namespace {

std::string cudaMessage(cudaError_t e) { return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")"; }

// Size classes: four per power of two, at least 512 bytes, so a freed block fits later requests
// of nearly the same size and the waste stays under 25%.
size_t sizeClass(size_t n) {
  if (n <= 512) return 512;
  int lg = 63 - __builtin_clzll(n);
  size_t step = (size_t)1 << (lg - 2);
  return (n + step - 1) / step * step;
}

class Runtime final : public DeviceRuntime {
 public:
  explicit Runtime(int device) : device_(device) {
    LTS_CHECK(cudaSetDevice(device), "cudaSetDevice");
    cudaDeviceProp prop;
    LTS_CHECK(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
    name_ = prop.name;
    smCount = prop.multiProcessorCount;
    ccMajor = prop.major;
    ccMinor_ = prop.minor;
    totalMem_ = prop.totalGlobalMem;
    LTS_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    LTS_CHECK(cudaHostAlloc((void**)&hostError_, sizeof(DeviceError), cudaHostAllocMapped), "cudaHostAlloc (error flag)");
    *hostError_ = DeviceError{};
    LTS_CHECK(cudaHostGetDevicePointer((void**)&error, hostError_, 0), "cudaHostGetDevicePointer");
    for (auto& s : staging_) {
      LTS_CHECK(cudaMallocHost(&s.buf, kStaging), "cudaMallocHost (staging)");
      LTS_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "cudaEventCreate");
    }
  }

  ~Runtime() override { dispose(); }

  int deviceId() const override { return device_; }
  bool isDisposed() const override { return disposed_; }
  void fail(const std::string& message) override {
    std::lock_guard<std::mutex> lock(failMutex_);
    if (failure_.empty()) failure_ = message;
  }

  void dispose() {
    if (disposed_) return;
    disposed_ = true;
    cudaSetDevice(device_);
    if (capturing_) captureEnd(false);
    cudaStreamSynchronize(stream);
    for (auto& [id, g] : graphs_) {
      cudaGraphExecDestroy(g.exec);
      for (auto& [p, cls] : g.blocks) cudaFree(p);
    }
    graphs_.clear();
    for (auto& [p, size] : live_) cudaFree(p);
    live_.clear();
    trim();
    for (auto& s : staging_) cudaFreeHost(s.buf), cudaEventDestroy(s.done);
    for (auto& [size, list] : pinned_)
      for (void* p : list) cudaFreeHost(p);
    pinned_.clear();
    for (auto e : events_) cudaEventDestroy(e);
    events_.clear();
    cudaFreeHost(hostError_);
    cudaStreamDestroy(stream);
  }

  // ---- caching allocator ----
  // A cached free block of class `cls`, or null.
  void* takePooled(size_t cls) {
    auto it = pool_.find(cls);
    if (it == pool_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    pooledBytes_ -= cls;
    return p;
  }

  void* allocate(size_t bytes) {
    if (bytes == 0) return nullptr;
    size_t cls = sizeClass(bytes);
    if (capturing_) return allocateCaptured(cls);
    void* p = takePooled(cls);
    if (!p) {
      cudaError_t e = cudaMalloc(&p, cls);
      if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();  // clear it
        e = allocateAfterRelease(cls, &p);
      }
      if (e != cudaSuccess) throwCuda(e, "allocate " + std::to_string(bytes) + " bytes");
    }
    live_[p] = cls;
    liveBytes_ += cls;
    peakBytes_ = std::max(peakBytes_, liveBytes_);
    return p;
  }

  void free(void* p) {
    if (!p) return;
    auto it = live_.find(p);
    if (it == live_.end()) return;
    size_t cls = it->second;
    live_.erase(it);
    liveBytes_ -= cls;
    if (capturing_ && captureOwned_.count(p)) {
      // Reused only by later work of the same capture: after it, the block belongs to the graph.
      capturePool_[cls].push_back(p);
      return;
    }
    // Work already enqueued that reads p runs before any later use of it: one stream, in order.
    pool_[cls].push_back(p);
    pooledBytes_ += cls;
  }

  // The device is full: cached blocks go back to CUDA, largest classes first, until a block of
  // `cls` can be made. Releasing the whole cache instead would turn every later allocation of a
  // training step into a cudaMalloc again (tens of milliseconds a step near the memory limit).
  cudaError_t allocateAfterRelease(size_t cls, void** p) {
    LTS_CHECK(cudaStreamSynchronize(stream), "allocate (synchronize before releasing cached blocks)");
    cacheReleases_++;
    cudaError_t e = cudaErrorMemoryAllocation;
    size_t freed = 0;
    while (!pool_.empty()) {
      auto last = std::prev(pool_.end());
      void* block = last->second.back();
      last->second.pop_back();
      cudaFree(block);
      pooledBytes_ -= last->first;
      freed += last->first;
      if (last->second.empty()) pool_.erase(last);
      if (freed < cls && !pool_.empty()) continue;
      e = cudaMalloc(p, cls);
      if (e == cudaSuccess) return e;
      cudaGetLastError();
      freed = 0;
    }
    return cudaMalloc(p, cls);
  }

  void trim() {
    for (auto& [cls, list] : pool_)
      for (void* p : list) cudaFree(p);
    pool_.clear();
    pooledBytes_ = 0;
  }

  // ---- graph capture ----
  // Between captureBegin and captureEnd the stream records work instead of running it. Every
  // block allocated meanwhile is the graph's: replays write to the same addresses, so none of them
  // may reach another tensor while the graph lives. Blocks freed during the capture are reused by
  // later work of that capture only; at captureEnd the rest leave the allocator's books (their
  // tensors' frees are then ignored) until graphDestroy hands them all back to the pool.
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    std::vector<std::pair<void*, size_t>> blocks;
    size_t bytes = 0;
  };

  void* allocateCaptured(size_t cls) {
    void* p = nullptr;
    auto reuse = capturePool_.find(cls);
    if (reuse != capturePool_.end() && !reuse->second.empty()) {
      p = reuse->second.back();
      reuse->second.pop_back();
    } else {
      p = takePooled(cls);
      if (!p) {
        cudaError_t e = cudaMalloc(&p, cls);
        if (e != cudaSuccess) throwCuda(e, "allocate " + std::to_string(cls) + " bytes during a CUDA graph capture");
      }
      captureBlocks_.push_back({p, cls});
      captureOwned_.insert(p);
    }
    live_[p] = cls;
    liveBytes_ += cls;
    peakBytes_ = std::max(peakBytes_, liveBytes_);
    return p;
  }

  void notCapturing(const char* what) const {
    if (capturing_) throw CudaError(std::string(what) + " is not allowed while a CUDA graph is being captured (the capture records device work only; write inputs before it and read outputs after it)");
  }

  void captureBegin() {
    notCapturing("captureBegin");
    LTS_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
    capturing_ = true;
  }

  // Ends the capture: `keep` instantiates the graph and returns its id; otherwise (a failed
  // capture) the recorded work is dropped and the blocks go back to the allocator.
  int captureEnd(bool keep) {
    if (!capturing_) throw CudaError("captureEnd: no CUDA graph capture is running");
    cudaGraph_t g = nullptr;
    cudaError_t e = cudaStreamEndCapture(stream, &g);
    capturing_ = false;
    Graph graph;
    if (keep && e == cudaSuccess) {
      e = cudaGraphInstantiate(&graph.exec, g, 0);
    }
    if (g) cudaGraphDestroy(g);
    std::vector<std::pair<void*, size_t>> blocks;
    blocks.swap(captureBlocks_);
    captureOwned_.clear();
    capturePool_.clear();
    if (!keep || e != cudaSuccess) {
      // Blocks still held by tensors stay live; the others return to the pool.
      for (auto& [p, cls] : blocks)
        if (!live_.count(p)) pool_[cls].push_back(p), pooledBytes_ += cls;
      if (keep) throwCuda(e, "captureEnd (cudaStreamEndCapture / cudaGraphInstantiate)");
      cudaGetLastError();
      return -1;
    }
    for (auto& [p, cls] : blocks) {
      auto it = live_.find(p);
      if (it != live_.end()) live_.erase(it), liveBytes_ -= cls;
      graph.bytes += cls;
    }
    graph.blocks = std::move(blocks);
    liveBytes_ += graph.bytes;
    int id = nextGraph_++;
    graphs_[id] = std::move(graph);
    return id;
  }

  void graphLaunch(int id) {
    notCapturing("graphLaunch");
    auto it = graphs_.find(id);
    if (it == graphs_.end()) throw CudaError("graphLaunch: no CUDA graph " + std::to_string(id) + " (destroyed?)");
    LTS_CHECK(cudaGraphLaunch(it->second.exec, stream), "cudaGraphLaunch");
  }

  // Replays already enqueued run before any later use of the blocks: one stream, in order.
  void graphDestroy(int id) {
    auto it = graphs_.find(id);
    if (it == graphs_.end()) return;
    cudaGraphExecDestroy(it->second.exec);
    for (auto& [p, cls] : it->second.blocks) pool_[cls].push_back(p), pooledBytes_ += cls;
    liveBytes_ -= it->second.bytes;
    graphs_.erase(it);
  }

  void* scratch(size_t bytes) override { return allocate(bytes); }
  void release(void* p) override { free(p); }

  // ---- transfers ----
  void write(char* dst, const uint8_t* src, size_t n) {
    notCapturing("write");
    // Staged through pinned memory so the copy is asynchronous; a staging buffer is reused only
    // once the copy that last read it has finished.
    while (n > 0) {
      Staging& s = staging_[next_];
      next_ = (next_ + 1) % staging_.size();
      LTS_CHECK(cudaEventSynchronize(s.done), "write (waiting for a staging buffer)");
      size_t piece = std::min(n, kStaging);
      memcpy(s.buf, src, piece);
      LTS_CHECK(cudaMemcpyAsync(dst, s.buf, piece, cudaMemcpyHostToDevice, stream), "write (cudaMemcpyAsync host to device)");
      LTS_CHECK(cudaEventRecord(s.done, stream), "write (cudaEventRecord)");
      dst += piece, src += piece, n -= piece;
    }
  }

  void* takePinned(size_t bytes) {
    size_t cls = sizeClass(std::max<size_t>(bytes, 1));
    std::lock_guard<std::mutex> lock(pinnedMutex_);
    auto& list = pinned_[cls];
    if (!list.empty()) {
      void* p = list.back();
      list.pop_back();
      return p;
    }
    void* p;
    LTS_CHECK(cudaMallocHost(&p, cls), "read (cudaMallocHost)");
    return p;
  }
  void givePinned(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(pinnedMutex_);
    pinned_[sizeClass(std::max<size_t>(bytes, 1))].push_back(p);
  }

  cudaEvent_t newSyncEvent() {
    cudaEvent_t e;
    LTS_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming | cudaEventBlockingSync), "cudaEventCreate");
    LTS_CHECK(cudaEventRecord(e, stream), "cudaEventRecord");
    return e;
  }

  // The first index error a kernel recorded since the last check, as a message ("" if none); a
  // failed collective (fail) instead, for good: what this device holds may be wrong from then on.
  std::string takeDeviceError() {
    {
      std::lock_guard<std::mutex> lock(failMutex_);
      if (!failure_.empty()) return failure_;
    }
    if (hostError_->code == 0) return "";
    DeviceError e = *hostError_;
    *hostError_ = DeviceError{};
    constexpr int known = sizeof(kIndexErrors) / sizeof(kIndexErrors[0]);
    if (e.code < 1 || e.code > known) return "a CUDA kernel reported an unknown index error (code " + std::to_string(e.code) + ")";
    const IndexErrorInfo& op = kIndexErrors[e.code - 1];
    return std::string(op.op) + ": " + op.argument + " must be values in [0, " + std::to_string(e.bound) + ")" +
           (op.ignorable ? " or the ignore index" : "") + ", got " + std::to_string(e.value) + " at position " +
           std::to_string(e.position) + " (found by a CUDA kernel; reported at the next read or sync)";
  }

  // ---- timing events ----
  int eventCreate() {
    cudaEvent_t e;
    LTS_CHECK(cudaEventCreate(&e), "cudaEventCreate");
    events_.push_back(e);
    return (int)events_.size() - 1;
  }
  void eventRecord(int id) { LTS_CHECK(cudaEventRecord(events_.at(id), stream), "cudaEventRecord"); }
  float eventElapsed(int a, int b) {
    notCapturing("eventElapsed");
    LTS_CHECK(cudaEventSynchronize(events_.at(b)), "cudaEventSynchronize");
    float ms;
    LTS_CHECK(cudaEventElapsedTime(&ms, events_.at(a), events_.at(b)), "cudaEventElapsedTime");
    return ms;
  }

  bool disposed_ = false;
  int device_;
  int ccMinor_ = 0;
  size_t totalMem_ = 0;
  std::string name_;
  size_t liveBytes_ = 0, pooledBytes_ = 0, peakBytes_ = 0;
  // Allocations that found the device full and gave cached blocks back (allocateAfterRelease).
  size_t cacheReleases_ = 0;
  std::unordered_map<void*, size_t> live_;
  bool capturing_ = false;

 private:
  static constexpr size_t kStaging = 8 << 20;
  struct Staging {
    void* buf = nullptr;
    cudaEvent_t done = nullptr;
  };
  std::vector<Staging> staging_ = std::vector<Staging>(2);
  size_t next_ = 0;
  std::map<size_t, std::vector<void*>> pool_;
  std::vector<std::pair<void*, size_t>> captureBlocks_;
  std::unordered_set<void*> captureOwned_;
  std::map<size_t, std::vector<void*>> capturePool_;
  std::map<int, Graph> graphs_;
  int nextGraph_ = 1;
  std::map<size_t, std::vector<void*>> pinned_;
  std::mutex pinnedMutex_;
  std::vector<cudaEvent_t> events_;
  DeviceError* hostError_ = nullptr;
  std::mutex failMutex_;
  std::string failure_;
};

// Lets `device` read the memory of `peer` directly (NVLink or PCIe peer to peer) where the
// hardware allows it; false where it does not (copies are then staged through the host by CUDA).
bool enablePeerAccess(int device, int peer) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, bool> known;
  std::lock_guard<std::mutex> lock(mu);
  auto it = known.find({device, peer});
  if (it != known.end()) return it->second;
  int can = 0;
  bool ok = cudaDeviceCanAccessPeer(&can, device, peer) == cudaSuccess && can;
  if (ok) {
    makeCurrent(device);
    cudaError_t e = cudaDeviceEnablePeerAccess(peer, 0);
    if (e == cudaErrorPeerAccessAlreadyEnabled) cudaGetLastError();
    else if (e != cudaSuccess) cudaGetLastError(), ok = false;
  }
  known[{device, peer}] = ok;
  return ok;
}

// The launchers by their index in LAUNCHERS. Throws, naming them, when the names the .cu files
// register and the names TypeScript launches differ; Init calls it, so such an addon never loads.
const std::vector<Launcher>& launchers() {
  static const std::vector<Launcher> byIndex = [] {
    Registry reg;
    registerElementwise(reg);
    registerReduce(reg);
    registerMovement(reg);
    registerIndexing(reg);
    registerNn(reg);
    registerRandom(reg);
    registerMatmul(reg);
    registerLightning(reg);
    registerLightningState(reg);
    registerOptim(reg);
    registerDecode(reg);
    registerDecodeLayer(reg);
    std::vector<Launcher> out;
    std::string missing, unknown;
    for (const char* name : kLauncherNames) {
      auto it = reg.find(name);
      if (it == reg.end()) missing += std::string(missing.empty() ? "" : ", ") + name;
      out.push_back(it == reg.end() ? nullptr : it->second);
      if (it != reg.end()) reg.erase(it);
    }
    for (auto& [name, fn] : reg) unknown += (unknown.empty() ? "" : ", ") + name;
    if (!missing.empty() || !unknown.empty())
      throw std::runtime_error("CUDA addon: the launchers native/*.cu register differ from LAUNCHERS in src/codes.ts" +
                               (missing.empty() ? "" : "; not registered: " + missing) +
                               (unknown.empty() ? "" : "; not in LAUNCHERS: " + unknown));
    return out;
  }();
  return byIndex;
}

void* toPtr(const Napi::Value& v) { return reinterpret_cast<void*>(static_cast<uintptr_t>(v.As<Napi::Number>().Int64Value())); }

// Waits for an event off the JavaScript thread, then (optionally) copies a pinned buffer out.
class WaitWorker : public Napi::AsyncWorker {
 public:
  WaitWorker(Napi::Env env, Runtime* rt, cudaEvent_t ev, void* pinned, size_t bytes)
      : Napi::AsyncWorker(env), rt_(rt), ev_(ev), pinned_(pinned), bytes_(bytes), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    cudaSetDevice(rt_->device_);
    cudaError_t e = cudaEventSynchronize(ev_);
    if (e != cudaSuccess) SetError((pinned_ ? "read: " : "sync: ") + cudaMessage(e));
  }
  void OnOK() override {
    Napi::Env env = Env();
    cleanup();
    std::string err = rt_->takeDeviceError();
    if (!err.empty()) {
      if (pinned_) rt_->givePinned(pinned_, bytes_);
      deferred_.Reject(Napi::Error::New(env, err).Value());
      return;
    }
    if (pinned_) {
      auto out = Napi::Uint8Array::New(env, bytes_);
      memcpy(out.Data(), pinned_, bytes_);
      rt_->givePinned(pinned_, bytes_);
      deferred_.Resolve(out);
    } else {
      deferred_.Resolve(env.Undefined());
    }
  }
  void OnError(const Napi::Error& e) override {
    cleanup();
    if (pinned_) rt_->givePinned(pinned_, bytes_);
    deferred_.Reject(e.Value());
  }

 private:
  void cleanup() { cudaEventDestroy(ev_); }
  Runtime* rt_;
  cudaEvent_t ev_;
  void* pinned_;
  size_t bytes_;
  Napi::Promise::Deferred deferred_;
};

class RuntimeWrap : public Napi::ObjectWrap<RuntimeWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Runtime",
                       {InstanceMethod("info", &RuntimeWrap::Info), InstanceMethod("allocate", &RuntimeWrap::Allocate),
                        InstanceMethod("free", &RuntimeWrap::Free), InstanceMethod("write", &RuntimeWrap::Write),
                        InstanceMethod("readSync", &RuntimeWrap::ReadSync), InstanceMethod("read", &RuntimeWrap::Read),
                        InstanceMethod("sync", &RuntimeWrap::Sync), InstanceMethod("syncNow", &RuntimeWrap::SyncNow),
                        InstanceMethod("launch", &RuntimeWrap::Launch), InstanceMethod("memory", &RuntimeWrap::Memory),
                        InstanceMethod("resetPeak", &RuntimeWrap::ResetPeak), InstanceMethod("lightningSegmentTokens", &RuntimeWrap::LightningSegmentTokens),
                        InstanceMethod("trim", &RuntimeWrap::Trim), InstanceMethod("eventCreate", &RuntimeWrap::EventCreate),
                        InstanceMethod("eventRecord", &RuntimeWrap::EventRecord), InstanceMethod("eventElapsed", &RuntimeWrap::EventElapsed),
                        InstanceMethod("copyFrom", &RuntimeWrap::CopyFrom), InstanceMethod("captureBegin", &RuntimeWrap::CaptureBegin),
                        InstanceMethod("captureEnd", &RuntimeWrap::CaptureEnd), InstanceMethod("graphLaunch", &RuntimeWrap::GraphLaunch),
                        InstanceMethod("graphDestroy", &RuntimeWrap::GraphDestroy), InstanceMethod("dispose", &RuntimeWrap::Dispose)});
  }

  Runtime* runtime() { return rt_ && !rt_->disposed_ ? rt_.get() : nullptr; }

  RuntimeWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RuntimeWrap>(info) {
    int device = info.Length() > 0 ? info[0].As<Napi::Number>().Int32Value() : 0;
    guard(info.Env(), [&] {
      int count = 0;
      cudaError_t e = cudaGetDeviceCount(&count);
      if (e != cudaSuccess || count == 0) {
        cudaGetLastError();
        throw CudaError("no CUDA device: cudaGetDeviceCount " + (e != cudaSuccess ? "failed with " + cudaMessage(e) : std::string("found 0 devices")));
      }
      if (device < 0 || device >= count)
        throw CudaError("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) + " found)");
      rt_ = std::make_unique<Runtime>(device);
    });
  }

 private:
  template <class F>
  static auto guard(Napi::Env env, F&& f) -> decltype(f()) {
    try {
      return f();
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

  // The runtime, its device made current.
  Runtime& rt(Napi::Env env) {
    if (!rt_ || rt_->disposed_) throw Napi::Error::New(env, "the CUDA backend was disposed");
    guard(env, [&] { makeCurrent(rt_->device_); });
    return *rt_;
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    auto o = Napi::Object::New(info.Env());
    o.Set("name", r.name_);
    o.Set("device", r.device_);
    o.Set("smCount", r.smCount);
    o.Set("computeCapability", std::to_string(r.ccMajor) + "." + std::to_string(r.ccMinor_));
    o.Set("totalMemory", (double)r.totalMem_);
    o.Set("cublas", cublasStatus());
    int rtv = 0, drv = 0;
    cudaRuntimeGetVersion(&rtv);
    cudaDriverGetVersion(&drv);
    o.Set("runtimeVersion", rtv);
    o.Set("driverVersion", drv);
    return o;
  }

  Napi::Value Allocate(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    size_t bytes = (size_t)info[0].As<Napi::Number>().Int64Value();
    return guard(info.Env(), [&] { return Napi::Number::New(info.Env(), (double)(uintptr_t)r.allocate(bytes)); });
  }

  Napi::Value Free(const Napi::CallbackInfo& info) {
    if (rt_ && !rt_->disposed_) rt(info.Env()).free(toPtr(info[0]));
    return info.Env().Undefined();
  }

  // (ptr, byteOffset, bytes: Uint8Array)
  Napi::Value Write(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    char* dst = (char*)toPtr(info[0]) + info[1].As<Napi::Number>().Int64Value();
    auto src = info[2].As<Napi::Uint8Array>();
    guard(info.Env(), [&] { r.write(dst, src.Data(), src.ByteLength()); });
    return info.Env().Undefined();
  }

  // (ptr, byteOffset, byteLength) → Uint8Array, waiting here
  Napi::Value ReadSync(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    guard(info.Env(), [&] { r.notCapturing("readSync"); });
    const char* src = (const char*)toPtr(info[0]) + info[1].As<Napi::Number>().Int64Value();
    size_t n = (size_t)info[2].As<Napi::Number>().Int64Value();
    auto out = Napi::Uint8Array::New(info.Env(), n);
    guard(info.Env(), [&] {
      if (n > 0) {
        void* pinned = r.takePinned(n);
        LTS_CHECK(cudaMemcpyAsync(pinned, src, n, cudaMemcpyDeviceToHost, r.stream), "readSync (cudaMemcpyAsync device to host)");
        cudaError_t e = cudaStreamSynchronize(r.stream);
        if (e == cudaSuccess) memcpy(out.Data(), pinned, n);
        r.givePinned(pinned, n);
        if (e != cudaSuccess) throwCuda(e, "readSync");
      } else {
        LTS_CHECK(cudaStreamSynchronize(r.stream), "readSync");
      }
      std::string err = r.takeDeviceError();
      if (!err.empty()) throw std::runtime_error(err);
    });
    return out;
  }

  // (ptr, byteOffset, byteLength) → Promise<Uint8Array>; the wait happens off the JavaScript thread
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    guard(info.Env(), [&] { r.notCapturing("read"); });
    const char* src = (const char*)toPtr(info[0]) + info[1].As<Napi::Number>().Int64Value();
    size_t n = (size_t)info[2].As<Napi::Number>().Int64Value();
    return guard(info.Env(), [&] {
      void* pinned = r.takePinned(n);
      if (n > 0) LTS_CHECK(cudaMemcpyAsync(pinned, src, n, cudaMemcpyDeviceToHost, r.stream), "read (cudaMemcpyAsync device to host)");
      auto* w = new WaitWorker(info.Env(), &r, r.newSyncEvent(), pinned, n);
      w->Queue();
      return w->promise();
    });
  }

  Napi::Value Sync(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    guard(info.Env(), [&] { r.notCapturing("sync"); });
    return guard(info.Env(), [&] {
      auto* w = new WaitWorker(info.Env(), &r, r.newSyncEvent(), nullptr, 0);
      w->Queue();
      return w->promise();
    });
  }

  Napi::Value SyncNow(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    guard(info.Env(), [&] { r.notCapturing("syncNow"); });
    guard(info.Env(), [&] {
      LTS_CHECK(cudaStreamSynchronize(r.stream), "sync");
      std::string err = r.takeDeviceError();
      if (!err.empty()) throw std::runtime_error(err);
    });
    return info.Env().Undefined();
  }

  // (launcher: index in LAUNCHERS, ptrs: number[], ints: number[], floats: number[])
  Napi::Value Launch(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    int id = info[0].As<Napi::Number>().Int32Value();
    if (id < 0 || id >= kLauncherCount) throw Napi::Error::New(info.Env(), "CUDA backend: no kernel launcher " + std::to_string(id));
    const char* name = kLauncherNames[id];
    Args a;
    auto ps = info[1].As<Napi::Array>();
    auto is = info[2].As<Napi::Array>();
    auto fs = info[3].As<Napi::Array>();
    for (uint32_t k = 0; k < ps.Length(); k++) a.p.push_back((uint64_t)ps.Get(k).As<Napi::Number>().Int64Value());
    for (uint32_t k = 0; k < is.Length(); k++) a.i.push_back(is.Get(k).As<Napi::Number>().Int64Value());
    for (uint32_t k = 0; k < fs.Length(); k++) a.f.push_back(fs.Get(k).As<Napi::Number>().DoubleValue());
    r.declined = false;
    try {
      launchers()[id](r, a);
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), std::string("CUDA kernel '") + name + "': " + e.what());
    }
    return Napi::Boolean::New(info.Env(), !r.declined);
  }

  Napi::Value Memory(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    auto o = Napi::Object::New(info.Env());
    o.Set("liveBytes", (double)r.liveBytes_);
    o.Set("liveBuffers", (double)r.live_.size());
    o.Set("pooledBytes", (double)r.pooledBytes_);
    o.Set("peakBytes", (double)r.peakBytes_);
    o.Set("cacheReleases", (double)r.cacheReleases_);
    return o;
  }

  // A new peak starts at the live bytes now (CudaBackend.resetPeakMemory, per-case measurements).
  Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    r.peakBytes_ = r.liveBytes_;
    return info.Env().Undefined();
  }

  // (dtype code, B, H, T, D, E) → the segment length whose states lightningAttention keeps for the
  // backward, or 0 (lightning.cu lightningSegmentTokens). Enqueues nothing.
  Napi::Value LightningSegmentTokens(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    int v[6];
    for (int k = 0; k < 6; k++) v[k] = info[k].As<Napi::Number>().Int32Value();
    return Napi::Number::New(info.Env(), guard(info.Env(), [&] { return lightningSegmentTokensOf(r, v[0], v[1], v[2], v[3], v[4], v[5]); }));
  }

  Napi::Value Trim(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    guard(info.Env(), [&] { r.notCapturing("trim"); });
    guard(info.Env(), [&] {
      LTS_CHECK(cudaStreamSynchronize(r.stream), "trim");
      r.trim();
    });
    return info.Env().Undefined();
  }

  Napi::Value EventCreate(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    return guard(info.Env(), [&] { return Napi::Number::New(info.Env(), r.eventCreate()); });
  }
  Napi::Value EventRecord(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    guard(info.Env(), [&] { r.eventRecord(info[0].As<Napi::Number>().Int32Value()); });
    return info.Env().Undefined();
  }
  Napi::Value EventElapsed(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    return guard(info.Env(), [&] {
      return Napi::Number::New(info.Env(), r.eventElapsed(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value()));
    });
  }

  // (source: Runtime, srcPtr, srcOffset, dstPtr, dstOffset, byteLength) → "same device" | "peer" | "staged"
  // Enqueued on this (the destination's) stream after the source stream's work so far; the source
  // stream then waits for the copy, so the source's allocator cannot hand the buffer on before it
  // was read. Peer to peer where the GPUs allow it, else CUDA stages the copy through the host.
  Napi::Value CopyFrom(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Runtime& dst = rt(env);
    auto* src = static_cast<Runtime*>(unwrapRuntime(info[0], "source"));
    const char* from = (const char*)toPtr(info[1]) + info[2].As<Napi::Number>().Int64Value();
    char* to = (char*)toPtr(info[3]) + info[4].As<Napi::Number>().Int64Value();
    size_t n = (size_t)info[5].As<Napi::Number>().Int64Value();
    return guard(env, [&] {
      const char* how = "same device";
      bool same = src == &dst;
      if (!same) streamAfter(dst, *src);
      makeCurrent(dst.device_);
      if (src->device_ == dst.device_) {
        if (n > 0) LTS_CHECK(cudaMemcpyAsync(to, from, n, cudaMemcpyDeviceToDevice, dst.stream), "copyFrom (cudaMemcpyAsync)");
      } else {
        how = enablePeerAccess(dst.device_, src->device_) ? "peer" : "staged";
        makeCurrent(dst.device_);
        if (n > 0) LTS_CHECK(cudaMemcpyPeerAsync(to, dst.device_, from, src->device_, n, dst.stream), "copyFrom (cudaMemcpyPeerAsync)");
      }
      if (!same) streamAfter(*src, dst);
      makeCurrent(dst.device_);
      return Napi::String::New(env, how);
    });
  }

  // Later work on `later`'s stream waits for the work enqueued so far on `first`'s stream.
  static void streamAfter(Runtime& later, Runtime& first) {
    makeCurrent(first.device_);
    cudaEvent_t e;
    LTS_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "copyFrom (cudaEventCreate)");
    cudaError_t r = cudaEventRecord(e, first.stream);
    if (r == cudaSuccess) {
      makeCurrent(later.device_);
      r = cudaStreamWaitEvent(later.stream, e, 0);
    }
    cudaEventDestroy(e);
    if (r != cudaSuccess) throwCuda(r, "copyFrom (ordering the two streams)");
  }

  Napi::Value CaptureBegin(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    guard(info.Env(), [&] { r.captureBegin(); });
    return info.Env().Undefined();
  }

  // (keep: boolean) → graph id, or -1 when not kept
  Napi::Value CaptureEnd(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    bool keep = info[0].As<Napi::Boolean>().Value();
    return guard(info.Env(), [&] { return Napi::Number::New(info.Env(), r.captureEnd(keep)); });
  }

  Napi::Value GraphLaunch(const Napi::CallbackInfo& info) {
    Runtime& r = rt(info.Env());
    guard(info.Env(), [&] { r.graphLaunch(info[0].As<Napi::Number>().Int32Value()); });
    return info.Env().Undefined();
  }

  Napi::Value GraphDestroy(const Napi::CallbackInfo& info) {
    if (rt_ && !rt_->disposed_) {
      Runtime& r = rt(info.Env());
      guard(info.Env(), [&] { r.graphDestroy(info[0].As<Napi::Number>().Int32Value()); });
    }
    return info.Env().Undefined();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (rt_) rt_->dispose();
    return info.Env().Undefined();
  }

  std::unique_ptr<Runtime> rt_;
};

struct AddonData {
  Napi::FunctionReference runtimeClass;
};

// (ptr) → the ordinal of the device that owns the allocation, -1 for host or unknown memory
Napi::Value PointerDevice(const Napi::CallbackInfo& info) {
  cudaPointerAttributes a{};
  cudaError_t e = cudaPointerGetAttributes(&a, toPtr(info[0]));
  if (e != cudaSuccess) {
    cudaGetLastError();
    return Napi::Number::New(info.Env(), -1);
  }
  return Napi::Number::New(info.Env(), a.type == cudaMemoryTypeDevice ? a.device : -1);
}

// () → the calling thread's current device (what the last entry point made current)
Napi::Value CurrentDevice(const Napi::CallbackInfo& info) {
  int d = -1;
  if (cudaGetDevice(&d) != cudaSuccess) cudaGetLastError(), d = -1;
  return Napi::Number::New(info.Env(), d);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  try {
    launchers();
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  Napi::Function runtimeClass = RuntimeWrap::Init(env);
  env.SetInstanceData(new AddonData{Napi::Persistent(runtimeClass)});
  exports.Set("Runtime", runtimeClass);
  exports.Set("pointerDevice", Napi::Function::New(env, PointerDevice, "pointerDevice"));
  exports.Set("currentDevice", Napi::Function::New(env, CurrentDevice, "currentDevice"));
  initNccl(env, exports);
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  cudaGetLastError();
  exports.Set("deviceCount", e == cudaSuccess ? count : 0);
  std::string why = e == cudaSuccess ? std::string() : cudaMessage(e);
  // The static runtime loads the driver library itself: say so when there is none at all.
  if (e == cudaErrorInsufficientDriver && !dlopen("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD) && !dlopen("libcuda.so.1", RTLD_LAZY))
    why += "; no NVIDIA driver is installed here (libcuda.so.1 not found)";
  exports.Set("deviceError", why);
  return exports;
}

}  // namespace

DeviceRuntime* unwrapRuntime(const Napi::Value& value, const char* argument) {
  Napi::Env env = value.Env();
  auto* data = env.GetInstanceData<AddonData>();
  if (!value.IsObject() || !data || !value.As<Napi::Object>().InstanceOf(data->runtimeClass.Value()))
    throw Napi::Error::New(env, std::string(argument) + " must be a CUDA runtime (CudaBackend.runtime)");
  Runtime* r = RuntimeWrap::Unwrap(value.As<Napi::Object>())->runtime();
  if (!r) throw Napi::Error::New(env, std::string(argument) + ": the CUDA backend was disposed");
  return r;
}

}  // namespace lts

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return lts::Init(env, exports); }

NODE_API_MODULE(lightning_cuda, InitModule)
