// What the harnesses of this folder share: a launcher Context whose scratch comes from cudaMalloc,
// for calling the addon's launchers directly from C++.
#pragma once
#include <cuda_runtime.h>

#include "runtime.h"

namespace lts {

struct BenchContext : Context {
  void* scratch(size_t bytes) override {
    void* p = nullptr;
    LTS_CHECK(cudaMalloc(&p, bytes), "harness scratch");
    return p;
  }
  void release(void* p) override { cudaFree(p); }
};

}  // namespace lts
