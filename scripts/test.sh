#!/usr/bin/env bash
# Installs the test dependencies (scripts/setup.sh --test), builds everything (Release: atp, the
# test suite, the micro-benchmarks, and the CUDA backend where a CUDA toolkit is found) and runs
# the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
# Ninja where the build folder is new: unlike Make it starts a target's sources before the libraries
# they link are built, so both cores stay busy across the chain core -> ... -> atp -> atp_tests (a
# folder configured earlier keeps its generator: CMake refuses to switch).
gen=(); [ -f build/CMakeCache.txt ] || gen=(-G Ninja)
# Without a GPU here the CUDA kernels are compiled to PTX only (CMake's 90-virtual): the CUDA front end
# and code generation are checked, the tests that need a GPU skip anyway, and ptxas's machine code,
# ~40% of nvcc's time (attention.cu: 112 s of CPU with it, 66 s without), is left to the GPU machine's
# builds (bench/cuda_device.sh packs one made with sm_90). A GPU here gets real sm_90 code.
arch=90; nvidia-smi -L >/dev/null 2>&1 || arch=90-virtual
cmake "${gen[@]}" -S . -B build -DCMAKE_BUILD_TYPE=Release -DATP_BUILD_TESTS=ON -DATP_BUILD_BENCH=ON -DATP_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=$arch
cmake --build build -j2
ctest --test-dir build --output-on-failure -j2 --timeout 600
