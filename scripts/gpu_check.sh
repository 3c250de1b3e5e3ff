#!/usr/bin/env bash
# Builds llama-cpp-python with a GPU backend, and pyeagle against it, in a venv of its own, then
# runs the GPU tests (pytest -m gpu) on that backend's device.
#
#   bash scripts/gpu_check.sh vulkan    ggml's Vulkan backend; without a GPU it runs on Mesa's
#                                       software device (lavapipe): the same code path, slowly
#   bash scripts/gpu_check.sh cuda      an NVIDIA GPU (needs the CUDA toolkit)
#   bash scripts/gpu_check.sh metal     Apple silicon
#
# Environment:
#   PYEAGLE_GPU_VENV     the venv (default ~/.cache/pyeagle/gpu-venv-<backend>); it sees the system's
#                        site-packages (numpy, pytest, ...) and holds its own llama-cpp-python
#   PYEAGLE_LLAMA_SDIST  the llama-cpp-python 0.3.36 sdist (default: the one setup.sh's build cached
#                        in ~/.cache/pyeagle, else pip downloads it)
#   PYEAGLE_GPU_SWEEP=1  also run the bench's tree sweep and verify cost curve (default: on for
#                        cuda and metal, off for vulkan, where lavapipe decodes at ~2 tok/s)
#
# The llama.cpp build (llama-cpp-python's vendored copy) is done once per venv; later runs only
# rebuild pyeagle and run the tests. A Vulkan build compiles some hundred shaders: ~25-40 minutes
# on 2 cores. Compatibility patches go to a copy of the sdist, never to this repository:
#   - Debian 12's Vulkan headers (1.3.239) predate VK_EXT_layer_settings (1.3.261), which
#     ggml_vk_instance_init uses only to enable the validation layer's best-practice checks: with
#     older headers the instance is created without that settings chain.
set -euo pipefail
backend=${1:-}
case "$backend" in
  vulkan) flag="-DGGML_VULKAN=on" ;;
  cuda)   flag="-DGGML_CUDA=on" ;;
  metal)  flag="-DGGML_METAL=on" ;;
  *) echo "usage: bash scripts/gpu_check.sh vulkan|cuda|metal" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
repo=$(pwd)
PY=${PYTHON:-python3}
cache="$HOME/.cache/pyeagle"
venv=${PYEAGLE_GPU_VENV:-$cache/gpu-venv-$backend}
version=0.3.36
say() { echo "gpu_check: $*"; }

if [ "$backend" = vulkan ]; then
  need=()
  for pkg in libvulkan-dev glslc spirv-headers mesa-vulkan-drivers vulkan-tools; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  # ggml-vulkan skips CPU-type devices (lavapipe) unless one is named
  export GGML_VK_VISIBLE_DEVICES=${GGML_VK_VISIBLE_DEVICES:-0}
  vulkaninfo --summary 2>/dev/null | grep -E "deviceName|deviceType|apiVersion" | head -6 || true
fi

[ -x "$venv/bin/python" ] || "$PY" -m venv --system-site-packages "$venv"
vpy="$venv/bin/python"
stamp="$venv/.llama-cpp-python-$version-$backend"
if [ ! -f "$stamp" ]; then
  sdist=${PYEAGLE_LLAMA_SDIST:-$cache/llama_cpp_python-$version.tar.gz}
  if [ ! -f "$sdist" ]; then
    mkdir -p "$cache"
    "$PY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$cache"
  fi
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  tar -xzf "$sdist" -C "$work"
  src="$work/llama_cpp_python-$version"
  if [ "$backend" = vulkan ]; then
    "$vpy" - "$src/vendor/llama.cpp/ggml/src/ggml-vulkan/ggml-vulkan.cpp" <<'EOF'
import sys
path = sys.argv[1]
s = open(path).read()
start = s.index("    VkBool32 enable_best_practice = layer_settings;")
end_marker = "&layer_setting_info);\n"
end = s.index(end_marker, start) + len(end_marker)
plain = ("    vk::InstanceCreateInfo instance_create_info(vk::InstanceCreateFlags{}, &app_info, layers, extensions);\n")
s = (s[:start] + "#if VK_HEADER_VERSION >= 261\n" + s[start:end] + "#else  // pyeagle gpu_check.sh: no VK_EXT_layer_settings in these headers\n"
     + plain + "#endif\n" + s[end:])
open(path, "w").write(s)
print("gpu_check: patched ggml-vulkan.cpp (VK_EXT_layer_settings only with headers >= 1.3.261)")
EOF
  fi
  cpu_args=$(CMAKE_ARGS="" bash scripts/cmake_args.sh)
  say "building llama-cpp-python $version with $flag (CMAKE_ARGS=\"$cpu_args $flag\"), this takes a while"
  t0=$(date +%s)
  CMAKE_ARGS="$cpu_args $flag" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$vpy" -m pip install --quiet --no-cache-dir --force-reinstall --no-deps "$src"
  say "llama-cpp-python built in $(( $(date +%s) - t0 )) s"
  touch "$stamp"
fi

say "building pyeagle against it"
"$vpy" -m pip install --quiet --no-build-isolation --no-deps --force-reinstall "$repo"

cd "$(mktemp -d)"  # not the repository root: there `import pyeagle` finds the uncompiled tree
"$vpy" -c "from pyeagle import _core; print('gpu_check: devices', _core.devices())"
t0=$(date +%s)
PYEAGLE_GPU="$backend" "$vpy" -m pytest -m gpu -q -p no:cacheprovider "$repo/tests" -rs
say "gpu tests took $(( $(date +%s) - t0 )) s"

sweep=${PYEAGLE_GPU_SWEEP:-}
[ -n "$sweep" ] || { [ "$backend" = vulkan ] && sweep=0 || sweep=1; }
if [ "$sweep" = 1 ]; then
  "$vpy" -m pyeagle.bench --verify-curve -ngl -1
  "$vpy" -m pyeagle.bench --tree-sweep --sizes 1,2,4,8,16,32,60 --limit 10 -n 128 -ngl -1
fi
