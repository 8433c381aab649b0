{
  "targets": [
    {
      "target_name": "lightning_cuda",
      "sources": ["native/addon.cc", "native/nccl.cc"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!(node -p \"process.env.LIGHTNING_CUDA_HOME + '/include'\")",
        "native"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O2"],
      "libraries": [
        "<(module_root_dir)/build/cuda-obj/libltscuda.a",
        "<!(node -p \"process.env.LIGHTNING_CUDA_LIBDIR\")/libcudart_static.a",
        "-ldl",
        "-lrt",
        "-lpthread"
      ]
    }
  ]
}
