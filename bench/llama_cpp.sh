#!/bin/bash
# llama.cpp as a peer for bench/gguf_peer.py: its source without GitHub, built with CMake (never in CI).
#   bench/llama_cpp.sh fetch [DIR]          llama.cpp's source into DIR (default $ATP_PEERS/llama.cpp):
#                                           npm's node-llama-cpp package ships it as a git bundle
#                                           (package/llama/gitRelease.bundle); the tarball is cached
#   bench/llama_cpp.sh build [DIR] [--cuda] configure and build DIR in DIR/build-cpu (or DIR/build-cuda);
#                                           needs no network, so a GPU machine can build a fetched DIR
#   bench/llama_cpp.sh [all] [--cuda]       fetch, then build
# Prints the bin directory and the llama.cpp commit. ATP_PEERS: the cache (default ~/.cache/atp-peers);
# NLC_VERSION: the node-llama-cpp release (default 3.22.1, llama.cpp de3ff815ea7d of 2026-09-28).
# LLAMA_CMAKE_FLAGS: more CMake flags, after ours. A VM whose CPU lists AMX but does not let a process
# use its tiles (ggml's AMX GEMM then dies of SIGILL at `tilezero`, as on 2026-12-07's Xeon VM) needs
#   LLAMA_CMAKE_FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
#     -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON"
# (the native build's instruction sets without AMX).
# CPU: Release, GGML_NATIVE=ON, no curl, targets llama-bench llama-quantize llama-perplexity llama-tokenize, under
# `nice` with -j2 (the VM's two cores are shared). --cuda: GGML_CUDA=ON, CMAKE_CUDA_ARCHITECTURES=90
# (H100/H200), llama-server too, -j$(nproc).
set -eu
peers=${ATP_PEERS:-$HOME/.cache/atp-peers}
version=${NLC_VERSION:-3.22.1}
mode=all
case "${1:-}" in fetch|build|all) mode=$1; shift ;; esac
dir=$peers/llama.cpp
cuda=0
for arg in "$@"; do
  case "$arg" in
    --cuda) cuda=1 ;;
    -*) echo "llama_cpp.sh: unknown option $arg" >&2; exit 2 ;;
    *) dir=$arg ;;
  esac
done

fetch() {
  mkdir -p "$peers"
  local tgz=$peers/node-llama-cpp-$version.tgz
  if [ ! -s "$tgz" ]; then
    (cd "$peers" && npm pack --silent "node-llama-cpp@$version" >/dev/null)
  fi
  local tmp
  tmp=$(mktemp -d "$peers/unpack.XXXXXX")
  tar xzf "$tgz" -C "$tmp" package/llama/gitRelease.bundle
  if [ -d "$dir/.git" ]; then
    git -C "$dir" fetch -q "$tmp/package/llama/gitRelease.bundle" HEAD
    git -C "$dir" checkout -q --detach FETCH_HEAD
  else
    git -c advice.detachedHead=false clone -q "$tmp/package/llama/gitRelease.bundle" "$dir"
  fi
  rm -rf "$tmp"
}

build() {
  [ -f "$dir/CMakeLists.txt" ] || { echo "llama_cpp.sh: no llama.cpp source in $dir (run fetch first)" >&2; exit 1; }
  local b targets=(llama-bench llama-quantize llama-perplexity llama-tokenize) flags=(-DGGML_NATIVE=ON)
  if [ $cuda = 1 ]; then
    b=$dir/build-cuda
    targets+=(llama-server)
    flags+=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90)
  else
    b=$dir/build-cpu
    flags+=(-DGGML_CUDA=OFF)
  fi
  cmake -S "$dir" -B "$b" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF "${flags[@]}" ${LLAMA_CMAKE_FLAGS:-} >"$b.configure.log" 2>&1 \
    || { tail -20 "$b.configure.log" >&2; exit 1; }
  if [ $cuda = 1 ]; then
    cmake --build "$b" -j"$(nproc)" --target "${targets[@]}"
  else
    nice cmake --build "$b" -j2 --target "${targets[@]}"
  fi
  echo "bin: $b/bin"
}

[ "$mode" = build ] || fetch
[ "$mode" = fetch ] || build
echo "source: $dir"
echo "commit: $(git -C "$dir" rev-parse HEAD)"
