{
  "target_defaults": {
    "cflags": ["-O3", "-std=gnu11", "-fno-strict-aliasing", "-fPIC", "-Wall", "-Wno-unused-function"],
    "cflags!": ["-O2"],
    "xcode_settings": { "OTHER_CFLAGS": ["-O3", "-std=gnu11"] }
  },
  "targets": [
    {
      "target_name": "dseek_native",
      "sources": [
        "src/kernels/native/addon.c",
        "src/kernels/native/threadpool.c",
        "src/kernels/native/kernels.c",
        "src/kernels/native/gemm_f32.c",
        "src/kernels/native/quant.c",
        "src/kernels/native/repack.c",
        "src/kernels/native/experts.c",
        "src/kernels/native/arch/scalar.c",
        "src/kernels/native/guard.c"
      ],
      "conditions": [
        ["OS=='linux'", { "libraries": ["-lpthread", "-lm"] }],
        ["target_arch=='x64'", { "dependencies": ["dseek_avx2", "dseek_avx512", "dseek_amx"] }],
        ["target_arch=='arm64'", { "dependencies": ["dseek_neon"] }]
      ]
    }
  ],
  "conditions": [
    ["target_arch=='x64'", {
      "targets": [
        {
          "target_name": "dseek_avx2",
          "type": "static_library",
          "sources": ["src/kernels/native/arch/x86/avx2.c"],
          "cflags": ["-mavx2", "-mfma", "-mf16c"],
          "xcode_settings": { "OTHER_CFLAGS": ["-O3", "-std=gnu11", "-mavx2", "-mfma", "-mf16c"] }
        },
        {
          "target_name": "dseek_avx512",
          "type": "static_library",
          "sources": ["src/kernels/native/arch/x86/avx512.c"],
          "cflags": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni"],
          "xcode_settings": { "OTHER_CFLAGS": ["-O3", "-std=gnu11", "-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni"] }
        },
        {
          "target_name": "dseek_amx",
          "type": "static_library",
          "sources": ["src/kernels/native/arch/x86/amx.c"],
          "cflags": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mamx-tile", "-mamx-int8", "-mamx-bf16"],
          "xcode_settings": { "OTHER_CFLAGS": ["-O3", "-std=gnu11", "-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mamx-tile", "-mamx-int8", "-mamx-bf16"] }
        }
      ]
    }],
    ["target_arch=='arm64'", {
      "targets": [
        {
          "target_name": "dseek_neon",
          "type": "static_library",
          "sources": ["src/kernels/native/arch/arm/neon.c"],
          "cflags": ["-march=armv8.2-a+dotprod"],
          "xcode_settings": { "OTHER_CFLAGS": ["-O3", "-std=gnu11", "-march=armv8.2-a+dotprod"] }
        }
      ]
    }]
  ]
}
