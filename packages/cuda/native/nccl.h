// NCCL in the addon: the part of the NCCL 2.x C ABI that nccl.cc uses, declared here because the
// library is loaded at run time (dlopen) and no NCCL header is needed to build; and what nccl.cc
// and addon.cc share (the runtime a communicator runs on, device placement).
//
// The values below are NCCL's own (nccl.h of NCCL 2.x); the loader checks ncclGetVersion before any
// of them is used, so a library with another ABI is refused by name instead of misread.
#pragma once
#include <cuda_runtime.h>
#include <napi.h>

#include <string>

#include "runtime.h"

namespace lts {
namespace nccl {

// 128 opaque bytes, exchanged between ranks by the caller (the launcher's rendezvous).
constexpr int kUniqueIdBytes = 128;
struct UniqueId {
  char internal[kUniqueIdBytes];
};
using Comm = struct ncclComm*;

enum Result : int {
  Success = 0,
  UnhandledCudaError = 1,
  SystemError = 2,
  InternalError = 3,
  InvalidArgument = 4,
  InvalidUsage = 5,
  RemoteError = 6,
  InProgress = 7,
};

enum RedOp : int { Sum = 0, Prod = 1, Max = 2, Min = 3, Avg = 4 };

enum DataType : int {
  Int8 = 0,
  Uint8 = 1,
  Int32 = 2,
  Uint32 = 3,
  Int64 = 4,
  Uint64 = 5,
  Float16 = 6,
  Float32 = 7,
  Float64 = 8,
  Bfloat16 = 9,
};

// Version codes as ncclGetVersion reports them from 2.9 on: major·10000 + minor·100 + patch.
// 2.10 is the first with ncclAvg; send/recv, abort and async errors are older.
constexpr int kMinVersion = 21000;

using GetVersionFn = Result (*)(int*);
using GetUniqueIdFn = Result (*)(UniqueId*);
using CommInitRankFn = Result (*)(Comm*, int nranks, UniqueId id, int rank);
using CommFn = Result (*)(Comm);
using CommGetAsyncErrorFn = Result (*)(Comm, Result*);
using GetErrorStringFn = const char* (*)(Result);
using GetLastErrorFn = const char* (*)(Comm);
using GroupFn = Result (*)();
using AllReduceFn = Result (*)(const void* send, void* recv, size_t count, DataType, RedOp, Comm, cudaStream_t);
using BroadcastFn = Result (*)(const void* send, void* recv, size_t count, DataType, int root, Comm, cudaStream_t);
using ReduceScatterFn = Result (*)(const void* send, void* recv, size_t recvCount, DataType, RedOp, Comm, cudaStream_t);
using AllGatherFn = Result (*)(const void* send, void* recv, size_t sendCount, DataType, Comm, cudaStream_t);
using SendFn = Result (*)(const void* send, size_t count, DataType, int peer, Comm, cudaStream_t);
using RecvFn = Result (*)(void* recv, size_t count, DataType, int peer, Comm, cudaStream_t);

}  // namespace nccl

// Makes `device` the calling thread's current device; a no-op (one thread-local read) when it
// already is. Every entry point calls it: the current device is per thread and per process, and two
// runtimes on two GPUs in one process would otherwise redirect each other's work.
inline void makeCurrent(int device) {
  int now = -1;
  if (cudaGetDevice(&now) == cudaSuccess && now == device) return;
  LTS_CHECK(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")");
}

// What a communicator needs of the runtime (addon.cc) whose device and stream it works on.
class DeviceRuntime : public Context {
 public:
  virtual int deviceId() const = 0;
  virtual bool isDisposed() const = 0;
  // A collective on this device failed or timed out: every later read or sync of this runtime
  // throws `message` (the data it would return may be wrong). Callable from any thread.
  virtual void fail(const std::string& message) = 0;
};

// The runtime behind a JavaScript Runtime object (addon.cc); throws a JavaScript error naming
// `argument` when `value` is not a live one.
DeviceRuntime* unwrapRuntime(const Napi::Value& value, const char* argument);

// Adds `nccl` (the loader, unique ids, groups, the Communicator class) to the addon's exports.
void initNccl(Napi::Env env, Napi::Object exports);

}  // namespace lts
