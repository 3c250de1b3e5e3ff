#!/usr/bin/env bash
# Prints the CMAKE_ARGS for building llama-cpp-python (llama.cpp/ggml) on this machine.
#
# Why: a default build (GGML_NATIVE=ON) on a CPU with AMX compiles in ggml's AMX path, and the
# first decode then segfaults in ggml_backend_amx_mul_mat (llama.cpp issue #20824). On such a CPU
# we turn GGML_NATIVE off and name every ISA extension the compiler reports for this CPU except
# AMX, which keeps the fast AVX-512 repack kernels. On any other CPU (no AMX, ARM, Apple) the
# native default is kept. A user's own CMAKE_ARGS (CUDA, Metal, ...) always win.
set -euo pipefail
if [ -n "${CMAKE_ARGS:-}" ]; then
  printf '%s\n' "$CMAKE_ARGS"
  exit 0
fi
args="-DLLAVA_BUILD=OFF"
cc=${CC:-cc}
if [ "$(uname -m)" = x86_64 ] && command -v "$cc" >/dev/null 2>&1; then
  defs=$(echo | "$cc" -march=native -dM -E - 2>/dev/null || true)
  if grep -q '__AMX_INT8__\|__AMX_TILE__' <<<"$defs"; then
    args="$args -DGGML_NATIVE=OFF"
    for pair in AVX:__AVX__ AVX2:__AVX2__ FMA:__FMA__ F16C:__F16C__ BMI2:__BMI2__ \
                AVX512:__AVX512F__ AVX512_VBMI:__AVX512VBMI__ AVX512_VNNI:__AVX512VNNI__ \
                AVX512_BF16:__AVX512BF16__ AVX_VNNI:__AVXVNNI__; do
      opt=${pair%%:*}; macro=${pair#*:}
      if grep -q "#define $macro 1" <<<"$defs"; then args="$args -DGGML_$opt=ON"; fi
    done
  fi
fi
printf '%s\n' "$args"
