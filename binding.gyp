{
  "targets": [
    {
      "target_name": "dseek_native",
      "sources": [
        "src/kernels/native/addon.c",
        "src/kernels/native/threadpool.c",
        "src/kernels/native/kernels.c",
        "src/kernels/native/quant.c",
        "src/kernels/native/guard.c"
      ],
      "cflags": ["-O3", "-std=gnu11", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"],
      "cflags!": ["-O2"],
      "xcode_settings": {
        "OTHER_CFLAGS": ["-O3", "-std=gnu11"]
      },
      "conditions": [
        ["OS=='linux'", { "libraries": ["-lpthread", "-lm"] }]
      ]
    }
  ]
}
