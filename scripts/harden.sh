#!/usr/bin/env bash
# Hardening stage, run by .ci/run after scripts/test.sh. One clang build with ASan+UBSan (build-fuzz/,
# -DATP_FUZZ=ON) serves both parts, so CI compiles the project once more, not twice:
#   tests  the whole GoogleTest suite under the sanitizers
#   fuzz   a short run of every libFuzzer target in fuzz/ from its seeds
# scripts/harden.sh [tests] [fuzz] runs the parts named (both by default).
# FUZZ_SECONDS: run per target (default 10: nine targets, and all of CI should stay under 20 minutes);
# JOBS: build and ctest parallelism (default 2); FUZZ_JOBS: fuzzers at once (default 3: each runs its
# FUZZ_SECONDS of wall time whatever its share of the cores, so three on two cores end the stage in 3
# rounds instead of 5, ~35 s instead of ~57 s, at two thirds of the executions each).
# Any sanitizer report, crash, leak or input slower than 10 s fails the stage; the fuzzers leave the
# input in build-fuzz/artifacts/ and the log in build-fuzz/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-10}
JOBS=${JOBS:-2}
FUZZ_JOBS=${FUZZ_JOBS:-3}
PARTS=${*:-tests fuzz}
# target: dictionaries (fuzz/dict/) it is fuzzed with
TARGETS="safetensors:json,safetensors config:json,config tokenizer_json:json,tokenizer
         tokenizer_encode:tokenizer_encode kv_policy:kv_policy api_request:json,api_request gguf:gguf
         chat_template:chat_template,json serving_report:json"

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

stage() { echo "== harden: $* ($(date -u +%T))"; }

stage "build (clang, ASan+UBSan, libFuzzer)"
# The CUDA backend stays out: nvcc code is not instrumented, and the sanitizers target the CPU paths.
# -O1 with line tables only, as the sanitizers' documentation suggests: reports keep file and line,
# and the build costs less CPU than -O2 -g (~20% on the CLI's sources). atp_tests_avx2 stays out
# (ATP_AVX2_TESTS): the release suite runs it, and its sources are the ones atp_tests links.
gen=(); [ -f build-fuzz/CMakeCache.txt ] || gen=(-G Ninja)  # as scripts/test.sh: both cores busy
cmake "${gen[@]}" -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DATP_FUZZ=ON -DATP_CUDA=OFF \
      -DATP_BUILD_TESTS=ON -DATP_BUILD_BENCH=OFF -DATP_AVX2_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only -DNDEBUG" \
      "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only -DNDEBUG"
cmake --build build-fuzz -j"$JOBS"

if [[ " $PARTS " == *" tests "* ]]; then
  stage "test suite under ASan+UBSan"
  # python_tools runs Python only: nothing there is instrumented, and the release suite ran it already.
  # results_check compares docs/results.md's figures, committed from the gcc Release build: a clang
  # RelWithDebInfo build may sum in another order, and under ASan it would run several times slower.
  # The capacity test prefills 4k-token prompts on the reference model (arithmetic of the pool, whose code
  # the other Scheduler tests run under the sanitizers too): minutes under ASan for nothing new.
  # The reference model's perplexity tests (f32, Q8_0/Q4_0, k-quants, 8-bit activations) are numerics
  # over long windows, 30 s to 3 min each under ASan: the forward pass, the quantized matmuls and the
  # integer dot products they run are sanitized by the shorter model, kernel and Q8Dot tests.
  # More, 15-40 s each under ASan and run by the release suite: 64 sequences through the scheduler, and 16
  # with long prompts under transient-heavy policies in the bounded store (its admission, step
  # reservations, preemption and prefix-cache code runs here in the other Scheduler tests, with fewer
  # sequences, and the store's bound and refusals in PageStore.*); whole-text round trips of 128k-vocabulary GGUF tokenizers (the same encoder is sanitized
  # by the shorter tokenizer tests and fuzzed below); `atp bench`'s timing loops (CliTiny.BenchJson: the
  # engine paths it times run here in the CLI's other tests); `atp eval` drawing its figures
  # (SvgPlot.EvalAndAnalyzeFiguresAreReadable: the SVG writer is sanitized by the other SvgPlot tests,
  # the eval sweep by tests/eval_test.cpp).
  ctest --test-dir build-fuzz --output-on-failure -j"$JOBS" --timeout 1200 \
        -E '^(python_tools|results_check|Scheduler\.(SequencesRunningAtOnceFollowTheBytesRatio|SixtyFourMixedSequencesInAnOvercommittedPool|StepTransientsStayWithinTheBoundedStore)|RefModel\.(PerplexityMatchesReference|QuantizedPerplexityNearF32|KQuantPerplexityNearF32|Q8ActivationDecodeNearDequantizedPrefill)|Families/GgufTokenizerRoundTrip\..*|CliTiny\.BenchJson|SvgPlot\.EvalAndAnalyzeFiguresAreReadable)$'
fi

if [[ " $PARTS " == *" fuzz "* ]]; then
  python3 fuzz/make_seeds.py build-fuzz/seeds
  mkdir -p build-fuzz/dict build-fuzz/artifacts build-fuzz/logs
  # fuzz_one NAME: one target for FUZZ_SECONDS; on failure the end of its log and how to reproduce.
  fuzz_one() {
    local name=$1
    # New inputs go to build-fuzz/corpus/NAME; the seeds directory is only read.
    if ! "build-fuzz/fuzz/fuzz_$name" "build-fuzz/corpus/$name" "build-fuzz/seeds/$name" \
         -dict="build-fuzz/dict/$name.dict" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
         -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/fuzz_$name-" \
         > "build-fuzz/logs/$name.log" 2>&1; then
      tail -n 60 "build-fuzz/logs/$name.log"
      echo "harden: fuzz_$name failed; reproduce with build-fuzz/fuzz/fuzz_$name build-fuzz/artifacts/fuzz_$name-*" >&2
      return 1
    fi
    echo "fuzz_$name: $(grep -E '^#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb' \
                        "build-fuzz/logs/$name.log" | tr -s ' \n' ' ')"
  }
  # FUZZ_JOBS targets at a time (each is one process): every target runs FUZZ_SECONDS, so they end in
  # the order they started, and waiting for the oldest frees a slot.
  failed=0 running=()
  for t in $TARGETS; do
    name=${t%%:*}
    dicts=${t#*:}
    for d in ${dicts//,/ }; do cat "fuzz/dict/$d.dict"; done > "build-fuzz/dict/$name.dict"
    mkdir -p "build-fuzz/corpus/$name"
    if (( ${#running[@]} >= FUZZ_JOBS )); then
      wait "${running[0]}" || failed=1
      running=("${running[@]:1}")
    fi
    stage "fuzz_$name for ${FUZZ_SECONDS}s"
    fuzz_one "$name" &
    running+=($!)
  done
  for p in "${running[@]}"; do wait "$p" || failed=1; done
  (( failed == 0 )) || exit 1
fi
stage "done"
