// NCCL communicators for the CUDA backend (src/collective.ts is the TypeScript side).
//
// The library is loaded at run time, like cuBLAS: the path in LIGHTNING_NCCL_LIBRARY, else
// libnccl.so.2 through the loader's search path, else the copy in a Python environment's
// nvidia-nccl wheel. The addon builds and loads without it; only a communicator needs it.
//
// Streams: a collective runs on the runtime's compute stream, in order with the kernels around it,
// except an asynchronous all-reduce, send or recv, which runs on the communicator's own stream after
// the compute stream's work so far; `wait(token)` makes the compute stream wait for it (the host
// never blocks).
//
// Events: every collective is bracketed by two events the watchdog follows, and an asynchronous
// one needs two more; creating and destroying them per call costs tens of microseconds of host
// time, which is a large share of a collective of a few MiB. They come from a per-communicator pool
// instead: a watched pair goes back once its `done` has completed (the collective is over, so no
// stream or query still refers to them), a wait's event once the wait is enqueued (CUDA captures
// the event's state at cudaStreamWaitEvent, so recording it again later does not move the wait).
//
// Failure: NCCL kernels spin while a peer is missing, so a rank whose peer died would hang in its
// next read. A watchdog thread per communicator polls every kPollMs: a CUDA or NCCL error
// (ncclCommGetAsyncError), or a collective that started more than `timeoutMs` ago and has not
// finished, aborts the communicator (its kernels then exit) and marks the runtime failed, so the
// pending read or sync, and every later one, throws a message naming the collective, the rank and
// the cause. Bound: timeoutMs + kPollMs after the stuck collective started on the device.
//
// Groups: NCCL needs ncclGroupStart/End around the calls of several ranks made by one thread (and
// around point-to-point pairs). Inside a group NCCL enqueues nothing until ncclGroupEnd, so what
// must follow a collective on its stream (its completion event) is deferred to the group's end.
#include "nccl.h"

#include <dlfcn.h>
#include <glob.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace lts {
namespace {

constexpr int kPollMs = 50;

// ---- the library ----

struct Library {
  std::string error;  // why it cannot be used; empty when loaded
  std::string path;
  int version = 0;
  nccl::GetVersionFn getVersion = nullptr;
  nccl::GetUniqueIdFn getUniqueId = nullptr;
  nccl::CommInitRankFn commInitRank = nullptr;
  nccl::CommFn commFinalize = nullptr, commDestroy = nullptr, commAbort = nullptr;
  nccl::CommGetAsyncErrorFn commGetAsyncError = nullptr;
  nccl::GetErrorStringFn getErrorString = nullptr;
  nccl::GetLastErrorFn getLastError = nullptr;  // 2.13 and later; optional
  nccl::GroupFn groupStart = nullptr, groupEnd = nullptr;
  nccl::AllReduceFn allReduce = nullptr;
  nccl::BroadcastFn broadcast = nullptr;
  nccl::ReduceScatterFn reduceScatter = nullptr;
  nccl::AllGatherFn allGather = nullptr;
  nccl::SendFn send = nullptr;
  nccl::RecvFn recv = nullptr;
};

// Where a Python environment's nvidia-nccl wheel puts the library, as glob patterns.
std::vector<std::string> wheelPatterns() {
  const std::string tail = "/nvidia/nccl/lib/libnccl.so.2";
  std::vector<std::string> roots;
  if (const char* venv = getenv("VIRTUAL_ENV"); venv && *venv) roots.push_back(std::string(venv) + "/lib/python3*/site-packages");
  if (const char* conda = getenv("CONDA_PREFIX"); conda && *conda) roots.push_back(std::string(conda) + "/lib/python3*/site-packages");
  if (const char* home = getenv("HOME"); home && *home) {
    roots.push_back(std::string(home) + "/.local/lib/python3*/site-packages");
    roots.push_back(std::string(home) + "/.venv/lib/python3*/site-packages");
  }
  // System Pythons, then environments kept under /opt (/opt/conda, /opt/venv, /opt/pytorch...).
  for (const char* prefix : {"/usr/local/lib", "/usr/lib", "/usr/lib64", "/opt/*/lib"})
    for (const char* dir : {"site-packages", "dist-packages"}) roots.push_back(std::string(prefix) + "/python3*/" + dir);
  std::vector<std::string> out;
  for (auto& r : roots) out.push_back(r + tail);
  return out;
}

std::vector<std::string> globAll(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t g{};
  if (glob(pattern.c_str(), 0, nullptr, &g) == 0)
    for (size_t k = 0; k < g.gl_pathc; k++) out.push_back(g.gl_pathv[k]);
  globfree(&g);
  return out;
}

std::string dlMessage() {
  const char* e = dlerror();
  return e ? e : "unknown error";
}

template <class F>
bool bind(void* so, const char* name, F& fn, std::string& missing) {
  fn = reinterpret_cast<F>(dlsym(so, name));
  if (!fn) missing += std::string(missing.empty() ? "" : ", ") + name;
  return fn != nullptr;
}

Library load() {
  Library lib;
  void* so = nullptr;
  std::string tried;
  const char* env = getenv("LIGHTNING_NCCL_LIBRARY");
  if (env && *env) {
    // An explicit choice is not second-guessed: if it does not load, say so.
    so = dlopen(env, RTLD_NOW | RTLD_LOCAL);
    if (!so) {
      lib.error = "NCCL could not be loaded from LIGHTNING_NCCL_LIBRARY=" + std::string(env) + ": " + dlMessage() +
                  " (point it at a libnccl.so.2, or unset it to search the usual places)";
      return lib;
    }
    lib.path = env;
  } else {
    so = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (so) {
      lib.path = "libnccl.so.2";
    } else {
      tried = "libnccl.so.2 on the loader's search path (" + dlMessage() + ")";
      for (auto& pattern : wheelPatterns()) {
        for (auto& path : globAll(pattern))
          if ((so = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL))) {
            lib.path = path;
            break;
          }
        if (so) break;
        tried += ", " + pattern;
      }
    }
    if (!so) {
      lib.error = "NCCL was not found: tried " + tried +
                  ". Install it (the nvidia-nccl-cu13 Python wheel, or the libnccl2 package) or set LIGHTNING_NCCL_LIBRARY to the path of libnccl.so.2";
      return lib;
    }
  }
  std::string missing;
  bind(so, "ncclGetVersion", lib.getVersion, missing);
  bind(so, "ncclGetUniqueId", lib.getUniqueId, missing);
  bind(so, "ncclCommInitRank", lib.commInitRank, missing);
  bind(so, "ncclCommFinalize", lib.commFinalize, missing);
  bind(so, "ncclCommDestroy", lib.commDestroy, missing);
  bind(so, "ncclCommAbort", lib.commAbort, missing);
  bind(so, "ncclCommGetAsyncError", lib.commGetAsyncError, missing);
  bind(so, "ncclGetErrorString", lib.getErrorString, missing);
  bind(so, "ncclGroupStart", lib.groupStart, missing);
  bind(so, "ncclGroupEnd", lib.groupEnd, missing);
  bind(so, "ncclAllReduce", lib.allReduce, missing);
  bind(so, "ncclBroadcast", lib.broadcast, missing);
  bind(so, "ncclReduceScatter", lib.reduceScatter, missing);
  bind(so, "ncclAllGather", lib.allGather, missing);
  bind(so, "ncclSend", lib.send, missing);
  bind(so, "ncclRecv", lib.recv, missing);
  lib.getLastError = reinterpret_cast<nccl::GetLastErrorFn>(dlsym(so, "ncclGetLastError"));
  if (!missing.empty()) {
    lib.error = "the NCCL library " + lib.path + " lacks " + missing + " (NCCL 2.10 or later is needed)";
    return lib;
  }
  if (lib.getVersion(&lib.version) != nccl::Success) {
    lib.error = "ncclGetVersion failed in " + lib.path;
    return lib;
  }
  if (lib.version < nccl::kMinVersion || lib.version >= 30000) {
    lib.error = "the NCCL library " + lib.path + " is version code " + std::to_string(lib.version) +
                "; this addon speaks the ABI of NCCL 2.10 to 2.x (codes 21000 to 29999)";
    return lib;
  }
  return lib;
}

const Library& library() {
  static const Library lib = load();
  return lib;
}

// The library, or a JavaScript error saying why there is none.
const Library& need(Napi::Env env) {
  const Library& lib = library();
  if (!lib.error.empty()) throw Napi::Error::New(env, lib.error);
  return lib;
}

std::string versionString(int v) { return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100); }

std::string resultMessage(nccl::Result r, nccl::Comm comm) {
  const Library& lib = library();
  std::string s = lib.getErrorString ? lib.getErrorString(r) : "NCCL error " + std::to_string(r);
  if (lib.getLastError) {
    const char* last = lib.getLastError(comm);
    if (last && *last) s += ": " + std::string(last);
  }
  return s;
}

// ---- groups (per thread, as NCCL's own group state is) ----

thread_local int groupDepth = 0;
thread_local std::vector<std::function<void()>> afterGroup;

// Runs `f` now, or at the end of the current group (what must follow work NCCL enqueues there).
void atGroupEnd(std::function<void()> f) {
  if (groupDepth > 0) afterGroup.push_back(std::move(f));
  else f();
}

// ---- dtypes and reductions, by the codes of src/kernels.ts ----

nccl::DataType dataType(int dt, Napi::Env env) {
  switch (dt) {
    case F32: return nccl::Float32;
    case F16: return nccl::Float16;
    case BF16: return nccl::Bfloat16;
    case I32: return nccl::Int32;
    case U8: return nccl::Uint8;
    default: throw Napi::Error::New(env, "NCCL: no collective for dtype code " + std::to_string(dt) + " (f32, f16, bf16, i32, u8 are supported)");
  }
}

nccl::RedOp redOp(const std::string& op, Napi::Env env) {
  if (op == "sum") return nccl::Sum;
  if (op == "avg") return nccl::Avg;
  if (op == "max") return nccl::Max;
  if (op == "min") return nccl::Min;
  throw Napi::Error::New(env, "NCCL: op must be \"sum\", \"avg\", \"max\" or \"min\", got \"" + op + "\"");
}

// ---- the communicator ----

// A collective the watchdog follows: `start` and `done` are recorded just before and after it on
// its stream; it has been running since the watchdog first saw `start` complete.
struct Watch {
  cudaEvent_t start, done;
  std::string what;
  std::chrono::steady_clock::time_point since{};
  bool started = false;
};

// What the JavaScript object, its init worker and its watchdog thread share.
struct State {
  DeviceRuntime* rt = nullptr;
  int device = 0, rank = 0, world = 0;
  double timeoutMs = 30000;

  // Guards the NCCL handle against an abort from the watchdog while the main thread calls NCCL.
  std::timed_mutex commMu;
  nccl::Comm comm = nullptr;

  std::mutex mu;  // guards everything below
  std::condition_variable wake;
  std::deque<Watch> watches;
  std::vector<cudaEvent_t> spare;  // the event pool (see Events above)
  std::string failure;
  bool stop = false, closing = false, closed = false;
  std::thread watchdog;

  std::string who() const { return "rank " + std::to_string(rank) + " of " + std::to_string(world) + " on cuda:" + std::to_string(device); }

  // Records the failure once, aborts the communicator (its kernels exit) and fails the runtime.
  void fail(const std::string& message) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!failure.empty()) return;
      failure = message;
    }
    // The runtime first: a read waiting for the stuck collective returns once the abort below
    // ends it, and must find the failure then.
    rt->fail(message);
    // A main thread stuck inside NCCL holds commMu; abort anyway after a while: a hang is worse.
    bool locked = commMu.try_lock_for(std::chrono::seconds(5));
    if (comm) library().commAbort(comm);
    comm = nullptr;
    if (locked) commMu.unlock();
  }

  // An event from the pool, or a new one when it is empty.
  cudaEvent_t takeEvent() {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!spare.empty()) {
        cudaEvent_t e = spare.back();
        spare.pop_back();
        return e;
      }
    }
    cudaEvent_t e;
    LTS_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
    return e;
  }

  // Back to the pool: nothing enqueued may still wait on its current record (see Events above).
  void giveEvent(cudaEvent_t e) {
    std::lock_guard<std::mutex> lock(mu);
    spare.push_back(e);
  }

  // Destroys the pool (the watchdog has stopped; disposal).
  void dropEvents() {
    std::lock_guard<std::mutex> lock(mu);
    for (cudaEvent_t e : spare) cudaEventDestroy(e);
    spare.clear();
  }

  void watch(cudaEvent_t start, cudaEvent_t done, std::string what) {
    std::lock_guard<std::mutex> lock(mu);
    watches.push_back(Watch{start, done, std::move(what)});
  }

  void run() {
    cudaSetDevice(device);
    std::unique_lock<std::mutex> lock(mu);
    while (!stop) {
      wake.wait_for(lock, std::chrono::milliseconds(kPollMs));
      if (stop || !failure.empty()) break;
      std::string problem = poll();
      if (!problem.empty()) {
        lock.unlock();
        fail(problem);
        lock.lock();
        break;
      }
    }
    for (auto& w : watches) cudaEventDestroy(w.start), cudaEventDestroy(w.done);
    watches.clear();
  }

  // One look at the watched collectives and NCCL's error state (mu held); a message on failure.
  std::string poll() {
    auto now = std::chrono::steady_clock::now();
    for (auto it = watches.begin(); it != watches.end();) {
      cudaError_t e = cudaEventQuery(it->done);
      if (e == cudaSuccess) {
        // Finished: `start` completed before `done` on the same stream, so both are free.
        spare.push_back(it->start), spare.push_back(it->done);
        it = watches.erase(it);
        continue;
      }
      if (e != cudaErrorNotReady) return "NCCL " + it->what + " on " + who() + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
      if (!it->started && cudaEventQuery(it->start) == cudaSuccess) it->started = true, it->since = now;
      if (it->started) {
        double ms = std::chrono::duration<double, std::milli>(now - it->since).count();
        if (ms > timeoutMs)
          return "NCCL " + it->what + " on " + who() + " has not finished " + std::to_string((int)(ms / 1000)) + " s after it started (timeout " +
                 std::to_string((int)timeoutMs) + " ms): a peer rank stopped, died or called a different collective; the communicator was aborted";
      }
      ++it;
    }
    if (comm && !closing) {
      nccl::Result async = nccl::Success;
      nccl::Result r = library().commGetAsyncError(comm, &async);
      if (r != nccl::Success) async = r;
      if (async != nccl::Success && async != nccl::InProgress) return "NCCL on " + who() + " reported an error: " + resultMessage(async, comm);
    }
    return "";
  }

  void stopWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    wake.notify_all();
    if (watchdog.joinable()) watchdog.join();
  }
};

// ncclCommInitRank blocks until every rank has joined: it runs off the JavaScript thread.
class InitWorker : public Napi::AsyncWorker {
 public:
  InitWorker(Napi::Env env, std::shared_ptr<State> s, nccl::UniqueId id)
      : Napi::AsyncWorker(env), s_(std::move(s)), id_(id), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    if (cudaSetDevice(s_->device) != cudaSuccess) {
      SetError("cudaSetDevice(" + std::to_string(s_->device) + ") failed before ncclCommInitRank");
      return;
    }
    nccl::Comm comm = nullptr;
    nccl::Result r = library().commInitRank(&comm, s_->world, id_, s_->rank);
    if (r != nccl::Success) {
      SetError("ncclCommInitRank (" + s_->who() + ") failed: " + resultMessage(r, comm));
      return;
    }
    std::lock_guard<std::mutex> lock(s_->mu);
    if (s_->closed) {
      library().commAbort(comm);  // disposed (or given up on) while it waited for its peers
      SetError("the communicator was disposed before ncclCommInitRank finished");
      return;
    }
    s_->comm = comm;
    auto state = s_;
    s_->watchdog = std::thread([state] { state->run(); });
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  std::shared_ptr<State> s_;
  nccl::UniqueId id_;
  Napi::Promise::Deferred deferred_;
};

class Communicator : public Napi::ObjectWrap<Communicator> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Communicator",
                       {InstanceMethod("init", &Communicator::InitComm), InstanceMethod("allReduce", &Communicator::AllReduce),
                        InstanceMethod("allGather", &Communicator::AllGather), InstanceMethod("reduceScatter", &Communicator::ReduceScatter),
                        InstanceMethod("broadcast", &Communicator::Broadcast), InstanceMethod("send", &Communicator::Send),
                        InstanceMethod("recv", &Communicator::Recv), InstanceMethod("wait", &Communicator::Wait),
                        InstanceMethod("failure", &Communicator::Failure), InstanceMethod("dispose", &Communicator::Dispose)});
  }

  // (runtime, uniqueId: Uint8Array(128), worldSize, rank, timeoutMs)
  Communicator(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Communicator>(info), s_(std::make_shared<State>()) {
    Napi::Env env = info.Env();
    need(env);
    s_->rt = unwrapRuntime(info[0], "backend");
    rtRef_ = Napi::Persistent(info[0].As<Napi::Object>());
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
        info[1].As<Napi::Uint8Array>().ByteLength() != nccl::kUniqueIdBytes)
      throw Napi::Error::New(env, "NCCL: uniqueId must be the 128 bytes of ncclUniqueId() (a Uint8Array)");
    memcpy(id_.internal, info[1].As<Napi::Uint8Array>().Data(), nccl::kUniqueIdBytes);
    s_->world = info[2].As<Napi::Number>().Int32Value();
    s_->rank = info[3].As<Napi::Number>().Int32Value();
    s_->timeoutMs = info[4].As<Napi::Number>().DoubleValue();
    s_->device = s_->rt->deviceId();
  }

  ~Communicator() override { abandon(); }

 private:
  // Leaves without waiting (garbage collection of an undisposed communicator, or a failed one).
  void abandon() {
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      s_->closed = true;
    }
    s_->stopWatchdog();
    std::lock_guard<std::timed_mutex> lock(s_->commMu);
    if (s_->comm) library().commAbort(s_->comm);
    s_->comm = nullptr;
    destroyStreams();
  }

  void destroyStreams() {
    if (commStream_) cudaStreamDestroy(commStream_), commStream_ = nullptr;
    for (auto& [id, ev] : tokens_) cudaEventDestroy(ev);
    tokens_.clear();
    s_->dropEvents();
  }

  // Throws unless collectives can be enqueued now; makes the runtime's device current.
  void usable(Napi::Env env) {
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      if (!s_->failure.empty()) throw Napi::Error::New(env, s_->failure);
      if (s_->closed) throw Napi::Error::New(env, "NCCL: the communicator (" + s_->who() + ") was disposed");
    }
    if (!s_->comm) throw Napi::Error::New(env, "NCCL: the communicator (" + s_->who() + ") is not initialised yet (await its init())");
    if (s_->rt->isDisposed()) throw Napi::Error::New(env, "NCCL: the CUDA backend of " + s_->who() + " was disposed");
    makeCurrent(s_->device);
  }

  cudaStream_t commStream() {
    if (!commStream_) {
      int lo = 0, hi = 0;
      LTS_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi), "cudaDeviceGetStreamPriorityRange");
      // Communication first when both streams have work ready, as overlap wants.
      LTS_CHECK(cudaStreamCreateWithPriority(&commStream_, cudaStreamNonBlocking, hi), "cudaStreamCreate (communication stream)");
    }
    return commStream_;
  }

  // Enqueues one NCCL call on the compute stream (or, with `async`, on the communication stream
  // after the compute stream's work so far) under the watchdog; returns a token for `wait` when
  // async, else -1.
  template <class F>
  int enqueue(Napi::Env env, const std::string& what, bool async, F call) {
    usable(env);
    try {
      cudaStream_t s = s_->rt->stream;
      if (async) {
        s = commStream();
        cudaEvent_t ready = s_->takeEvent();
        cudaError_t e = cudaEventRecord(ready, s_->rt->stream);
        if (e == cudaSuccess) e = cudaStreamWaitEvent(s, ready, 0);
        s_->giveEvent(ready);  // the wait (if enqueued) captured it
        LTS_CHECK(e, what + " (cudaEventRecord/cudaStreamWaitEvent)");
      }
      cudaEvent_t start = s_->takeEvent();
      if (cudaError_t e = cudaEventRecord(start, s); e != cudaSuccess) {
        s_->giveEvent(start);
        LTS_CHECK(e, what + " (cudaEventRecord)");
      }
      nccl::Result r;
      {
        std::lock_guard<std::timed_mutex> lock(s_->commMu);
        if (!s_->comm) throw std::runtime_error(s_->failure.empty() ? "the communicator was aborted" : s_->failure);
        r = call(s);
      }
      if (r != nccl::Success) {
        // `start` may still be pending on the stream: destroy it (CUDA frees it once complete)
        // rather than hand it out again.
        cudaEventDestroy(start);
        std::string message = "NCCL " + what + " on " + s_->who() + " failed: " + resultMessage(r, s_->comm);
        // A communicator that returned an error is unusable (a peer is gone, or the ranks disagree):
        // fail it as the watchdog would, so later calls and reads refuse with the same message.
        s_->fail(message);
        throw std::runtime_error(message);
      }
      cudaEvent_t done = s_->takeEvent();
      cudaEvent_t token = async ? s_->takeEvent() : nullptr;
      int id = -1;
      if (token) tokens_[id = nextToken_++] = token;
      auto state = s_;
      int device = s_->device;
      atGroupEnd([state, device, s, start, done, token, what] {
        cudaSetDevice(device);
        cudaEventRecord(done, s);
        if (token) cudaEventRecord(token, s);
        state->watch(start, done, what);
      });
      return id;
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

  static void* ptr(const Napi::Value& v) { return reinterpret_cast<void*>(static_cast<uintptr_t>(v.As<Napi::Number>().Int64Value())); }
  static size_t count(const Napi::Value& v) { return (size_t)v.As<Napi::Number>().Int64Value(); }

  Napi::Value InitComm(const Napi::CallbackInfo& info) {
    need(info.Env());
    auto* w = new InitWorker(info.Env(), s_, id_);
    w->Queue();
    return w->promise();
  }

  // (send, recv, count, dtype, op, async) → token (async) or -1
  Napi::Value AllReduce(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    void *send = ptr(info[0]), *recv = ptr(info[1]);
    size_t n = count(info[2]);
    nccl::DataType dt = dataType(info[3].As<Napi::Number>().Int32Value(), env);
    nccl::RedOp op = redOp(info[4].As<Napi::String>().Utf8Value(), env);
    bool async = info[5].ToBoolean();
    auto comm = s_;
    int token = enqueue(env, async ? "allReduceAsync" : "allReduce", async,
                        [&](cudaStream_t s) { return library().allReduce(send, recv, n, dt, op, comm->comm, s); });
    return Napi::Number::New(env, token);
  }

  // (send, recv, sendCount, dtype): recv holds worldSize·sendCount elements, rank order
  Napi::Value AllGather(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    void *send = ptr(info[0]), *recv = ptr(info[1]);
    size_t n = count(info[2]);
    nccl::DataType dt = dataType(info[3].As<Napi::Number>().Int32Value(), env);
    auto comm = s_;
    enqueue(env, "allGather", false, [&](cudaStream_t s) { return library().allGather(send, recv, n, dt, comm->comm, s); });
    return env.Undefined();
  }

  // (send, recv, recvCount, dtype, op): send holds worldSize·recvCount elements
  Napi::Value ReduceScatter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    void *send = ptr(info[0]), *recv = ptr(info[1]);
    size_t n = count(info[2]);
    nccl::DataType dt = dataType(info[3].As<Napi::Number>().Int32Value(), env);
    nccl::RedOp op = redOp(info[4].As<Napi::String>().Utf8Value(), env);
    auto comm = s_;
    enqueue(env, "reduceScatter", false, [&](cudaStream_t s) { return library().reduceScatter(send, recv, n, dt, op, comm->comm, s); });
    return env.Undefined();
  }

  // (send, recv, count, dtype, root)
  Napi::Value Broadcast(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    void *send = ptr(info[0]), *recv = ptr(info[1]);
    size_t n = count(info[2]);
    nccl::DataType dt = dataType(info[3].As<Napi::Number>().Int32Value(), env);
    int root = info[4].As<Napi::Number>().Int32Value();
    auto comm = s_;
    enqueue(env, "broadcast", false, [&](cudaStream_t s) { return library().broadcast(send, recv, n, dt, root, comm->comm, s); });
    return env.Undefined();
  }

  // (ptr, count, dtype, peer, async) → token (async) or -1
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    void* buf = ptr(info[0]);
    size_t n = count(info[1]);
    nccl::DataType dt = dataType(info[2].As<Napi::Number>().Int32Value(), env);
    int peer = info[3].As<Napi::Number>().Int32Value();
    bool async = info.Length() > 4 && info[4].ToBoolean();
    auto comm = s_;
    int token = enqueue(env, "send to rank " + std::to_string(peer), async, [&](cudaStream_t s) { return library().send(buf, n, dt, peer, comm->comm, s); });
    return Napi::Number::New(env, token);
  }

  // (ptr, count, dtype, peer, async) → token (async) or -1
  Napi::Value Recv(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    void* buf = ptr(info[0]);
    size_t n = count(info[1]);
    nccl::DataType dt = dataType(info[2].As<Napi::Number>().Int32Value(), env);
    int peer = info[3].As<Napi::Number>().Int32Value();
    bool async = info.Length() > 4 && info[4].ToBoolean();
    auto comm = s_;
    int token = enqueue(env, "recv from rank " + std::to_string(peer), async, [&](cudaStream_t s) { return library().recv(buf, n, dt, peer, comm->comm, s); });
    return Napi::Number::New(env, token);
  }

  // (token): later work on the compute stream waits for that asynchronous collective.
  Napi::Value Wait(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int id = info[0].As<Napi::Number>().Int32Value();
    auto it = tokens_.find(id);
    if (it == tokens_.end()) throw Napi::Error::New(env, "NCCL: wait(" + std::to_string(id) + "): no such pending collective (waited for already?)");
    usable(env);
    cudaError_t e = cudaStreamWaitEvent(s_->rt->stream, it->second, 0);
    // The wait captured the event's state: it may be recorded again for another collective.
    s_->giveEvent(it->second);
    tokens_.erase(it);
    if (e != cudaSuccess) throw Napi::Error::New(env, "NCCL wait: cudaStreamWaitEvent: " + std::string(cudaGetErrorName(e)));
    return env.Undefined();
  }

  Napi::Value Failure(const Napi::CallbackInfo& info) {
    std::lock_guard<std::mutex> lock(s_->mu);
    return Napi::String::New(info.Env(), s_->failure);
  }

  // Waits for this rank's collectives to finish (bounded by the watchdog), then leaves the group
  // with ncclCommFinalize and ncclCommDestroy. Several ranks driven by one thread must dispose
  // inside one group: finalize waits for every rank, and the destroys then run at the group's end.
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool failed;
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      if (s_->closed) return env.Undefined();
      failed = !s_->failure.empty();
    }
    if (failed || !s_->comm || s_->rt->isDisposed()) {
      abandon();
      return env.Undefined();
    }
    makeCurrent(s_->device);
    cudaError_t e = cudaStreamSynchronize(s_->rt->stream);
    if (e == cudaSuccess && commStream_) e = cudaStreamSynchronize(commStream_);
    {
      std::lock_guard<std::mutex> lock(s_->mu);
      failed = !s_->failure.empty() || e != cudaSuccess;
      s_->closing = true;
      s_->closed = true;
    }
    s_->stopWatchdog();
    if (failed) {
      abandon();
      return env.Undefined();
    }
    std::unique_lock<std::timed_mutex> lock(s_->commMu);
    nccl::Comm comm = s_->comm;
    s_->comm = nullptr;
    nccl::Result r = library().commFinalize(comm);
    destroyStreams();
    if (r != nccl::Success) {
      library().commAbort(comm);
      throw Napi::Error::New(env, "ncclCommFinalize (" + s_->who() + ") failed: " + resultMessage(r, nullptr));
    }
    atGroupEnd([comm] { library().commDestroy(comm); });
    return env.Undefined();
  }

  std::shared_ptr<State> s_;
  Napi::ObjectReference rtRef_;  // keeps the runtime's JavaScript object alive as long as this
  nccl::UniqueId id_{};
  cudaStream_t commStream_ = nullptr;
  std::unordered_map<int, cudaEvent_t> tokens_;
  int nextToken_ = 0;
};

Napi::Value Version(const Napi::CallbackInfo& info) {
  const Library& lib = need(info.Env());
  auto o = Napi::Object::New(info.Env());
  o.Set("code", lib.version);
  o.Set("version", versionString(lib.version));
  o.Set("path", lib.path);
  return o;
}

Napi::Value UniqueIdBytes(const Napi::CallbackInfo& info) {
  const Library& lib = need(info.Env());
  nccl::UniqueId id{};
  nccl::Result r = lib.getUniqueId(&id);
  if (r != nccl::Success) throw Napi::Error::New(info.Env(), "ncclGetUniqueId failed: " + resultMessage(r, nullptr));
  auto out = Napi::Uint8Array::New(info.Env(), nccl::kUniqueIdBytes);
  memcpy(out.Data(), id.internal, nccl::kUniqueIdBytes);
  return out;
}

Napi::Value GroupStart(const Napi::CallbackInfo& info) {
  const Library& lib = need(info.Env());
  nccl::Result r = lib.groupStart();
  if (r != nccl::Success) throw Napi::Error::New(info.Env(), "ncclGroupStart failed: " + resultMessage(r, nullptr));
  groupDepth++;
  return info.Env().Undefined();
}

Napi::Value GroupEnd(const Napi::CallbackInfo& info) {
  const Library& lib = need(info.Env());
  if (groupDepth == 0) throw Napi::Error::New(info.Env(), "ncclGroupEnd without ncclGroupStart");
  nccl::Result r = lib.groupEnd();
  if (--groupDepth == 0) {
    // Even when the group failed, what was deferred records events and frees handles.
    auto work = std::move(afterGroup);
    afterGroup.clear();
    for (auto& f : work) f();
  }
  if (r != nccl::Success) throw Napi::Error::New(info.Env(), "ncclGroupEnd failed: " + resultMessage(r, nullptr));
  return info.Env().Undefined();
}

}  // namespace

void initNccl(Napi::Env env, Napi::Object exports) {
  auto o = Napi::Object::New(env);
  o.Set("version", Napi::Function::New(env, Version, "version"));
  o.Set("uniqueId", Napi::Function::New(env, UniqueIdBytes, "uniqueId"));
  o.Set("groupStart", Napi::Function::New(env, GroupStart, "groupStart"));
  o.Set("groupEnd", Napi::Function::New(env, GroupEnd, "groupEnd"));
  o.Set("Communicator", Communicator::Init(env));
  exports.Set("nccl", o);
}

}  // namespace lts
