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
cmake "${gen[@]}" -S . -B build -DCMAKE_BUILD_TYPE=Release -DATP_BUILD_TESTS=ON -DATP_BUILD_BENCH=ON -DATP_CUDA=ON
cmake --build build -j2
ctest --test-dir build --output-on-failure -j2 --timeout 600
