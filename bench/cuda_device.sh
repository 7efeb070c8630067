#!/bin/bash
# The CUDA backend's checks and measurements on the GPU machine (the `run` tool's H100), in one call.
#   bench/cuda_device.sh pack BUILD_DIR   (here) bundle the binaries built with -DATP_CUDA=ON
#                                         -DATP_NATIVE=OFF, their shared libraries and ../shared's
#                                         ref-5m into .cudacarry/ (excluded from git; name it in carry)
#   bench/cuda_device.sh run [STEP...]    (there) tests, bench, attn, sdpa (default: all, in order),
#                                         ncu_decode, ncu_steps, ncu_serve, ncu_sections, eval_cuda, serve, profile, peer_build, peer_serve, hf_peer (on request);
#                                         logs and JSON lines in $OUT. PREFILL=1024 bench: decode at
#                                         every context after a 1024-token prefill only; BENCH_KV:
#                                         the policies (default dense bf16, mx fp4, mx fp8, dense f32);
#                                         DECODE: decode steps per run (default 32)
#   bench/cuda_device.sh pack_peer SRC    (here) llama.cpp's source for the peer_build/peer_serve steps
#   bench/cuda_device.sh slim | unslim    (here) the `run` tool copies tracked files and refuses a tree
#                                         and carry over 64 MiB; models/atp-40m's weights (77 MB) alone
#                                         exceed it. slim drops the embedded models' weights from the index
#                                         (the files stay; git status shows staged deletions: commit only
#                                         named paths in between), unslim restores them.
# The GPU image has CUDA, cuBLAS and PyTorch but none of the Debian libraries atp links; they travel
# as files.
set -u
mode=${1:-}
carry=.cudacarry

big="models/atp-40m/model.safetensors models/atp-12m/model.safetensors"  # not needed there
if [ "$mode" = slim ]; then
  for f in $big; do git rm -q --cached "$f" && echo "/$f" >>"$(git rev-parse --git-path info/exclude)"; done
  git ls-files -z | xargs -0 du -cb | tail -1
  exit 0
fi
if [ "$mode" = unslim ]; then
  exclude=$(git rev-parse --git-path info/exclude)
  for f in $big; do grep -vx "/$f" "$exclude" >"$exclude.tmp"; mv "$exclude.tmp" "$exclude"; git add "$f"; done
  git status --short
  exit 0
fi

if [ "$mode" = pack ]; then
  build=${2:?build dir}
  exclude=$(git rev-parse --git-path info/exclude)  # keep the bundle out of git (and of the tree that travels)
  mkdir -p "$(dirname "$exclude")" && { grep -qx "/$carry/" "$exclude" 2>/dev/null || echo "/$carry/" >>"$exclude"; }
  rm -rf "$carry" && mkdir -p "$carry/stage/bin" "$carry/stage/lib" "$carry/shared/models" "$carry/shared/data"
  cp "$build/atp" "$build/atp_tests" "$build/src/cuda/atp_cuda_attn" "$carry/stage/bin/" && strip "$carry"/stage/bin/*
  # Everything the binaries load, except the C/C++ runtime and CUDA (the GPU image's own); OpenBLAS
  # and LAPACK too (8 MB compressed): the CPU twins of the ATP tests run there.
  ldd "$build/atp" "$build/atp_tests" | awk '/=> \//{print $3}' | sort -u |
    grep -v -E 'lib(c|m|rt|dl|pthread|gcc_s|stdc\+\+|cudart|cublas|cublasLt)\.so' |
    xargs -I{} cp -L {} "$carry/stage/lib/"
  tar -C "$carry/stage" -cJf "$carry/bundle.tar.xz" bin lib && rm -rf "$carry/stage"
  cp -r ../shared/models/ref-5m "$carry/shared/models/" && cp ../shared/data/valid.txt "$carry/shared/data/"
  du -sh "$carry"
  exit 0
fi

# pack_peer LLAMA_CPP_SRC: the llama.cpp tree (bench/llama_cpp.sh fetches one) as .peercarry/llama.cpp.tar.xz,
# without what a CUDA build of llama-server and llama-bench does not read (about 7 MB).
if [ "$mode" = pack_peer ]; then
  src=${2:?llama.cpp source dir}
  exclude=$(git rev-parse --git-path info/exclude)
  grep -qx "/.peercarry/" "$exclude" 2>/dev/null || echo "/.peercarry/" >>"$exclude"
  mkdir -p .peercarry
  tar -C "$src" --exclude=.git --exclude=./docs --exclude=./models --exclude=./tests --exclude=./benches \
    --exclude=./examples --exclude=./gguf-py --exclude='./ggml/src/ggml-'{vulkan,sycl,opencl,hexagon,metal,et,webgpu,openvino,cann} \
    -cJf .peercarry/llama.cpp.tar.xz . && du -sh .peercarry/llama.cpp.tar.xz
  exit 0
fi

[ "$mode" = run ] || { echo "usage: $0 pack BUILD_DIR | pack_peer LLAMA_CPP_SRC | slim | unslim | run [STEP...]" >&2; exit 2; }
shift
: "${OUT:?OUT (the folder that comes back) must be set}"
mkdir -p /tmp/atp && tar -C /tmp/atp -xJf "$carry/bundle.tar.xz" || exit 1
export LD_LIBRARY_PATH=/tmp/atp/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
atp=/tmp/atp/bin/atp
# The tests find ../shared beside the source directory compiled in (/work/main).
mkdir -p /work/main && { [ -e /work/shared ] || ln -s "$(readlink -f $carry/shared)" /work/shared; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv | tee "$OUT/gpu.txt"

tests() {
  timeout 300 /tmp/atp/bin/atp_tests --gtest_filter='Cuda*:*/cuda' 2>&1 | tee "$OUT/tests.log" |
    grep -E 'OK \]|FAILED|PASSED|Failure|error|Expected|Which|worst' | head -60
  echo "== generate on ref-5m (greedy; compare ../shared/models/ref-5m/reference/greedy.json)"
  timeout 60 $atp generate -m $carry/shared/models/ref-5m --device cuda --temp 0 -n 24 -p "Once upon a time" --json 2>&1 |
    tail -2 | tee "$OUT/generate.json"
}
bench_one() {  # kv context repeats prompt_tokens
  timeout 150 $atp bench -m /tmp/l1b --device cuda --kv "$1" --prompt-tokens "$4" --decode-context "$2" --decode-tokens ${DECODE:-32} \
    --repeats "$3" --json 2>>"$OUT/bench.err" | tee -a "$OUT/bench.jsonl"
}
# bench: prefill of the context length itself; decode_only: a 1024-token prefill (prefill unchanged).
bench() {
  [ -d /tmp/l1b ] || timeout 120 $atp testgen --shape llama-3.2-1b -o /tmp/l1b 2>&1 | tail -1
  # lowrank reads /tmp/l1b/kv_basis.safetensors: random orthonormal bases (its speed does not depend on them)
  [ -f /tmp/l1b/kv_basis.safetensors ] || python3 bench/random_kv_basis.py /tmp/l1b
  for kv in ${BENCH_KV:-dense:dtype=bf16 mx:fmt=fp4 mx:fmt=fp8_e4m3 dense:dtype=f32}; do
    bench_one $kv 1024 3 1024; bench_one $kv 8192 2 ${PREFILL:-8192}; bench_one $kv 32768 1 ${PREFILL:-32768}
  done
}
# The default `atp eval` sweep on ref-5m through the GPU (the entries it has kernels for), briefly.
eval_cuda() {
  timeout 300 $atp eval -m $carry/shared/models/ref-5m --device cuda -f $carry/shared/data/valid.txt --max-windows 4 \
    --no-retrieval -o /tmp/eval-cuda --json 2>"$OUT/eval_cuda.err" >"$OUT/eval_cuda.json"
  tail -3 "$OUT/eval_cuda.err"; cp /tmp/eval-cuda/sweep.csv "$OUT/" && cat "$OUT/sweep.csv"
}
attn() { timeout 150 /tmp/atp/bin/atp_cuda_attn 2>&1 | tee "$OUT/attn.jsonl"; }
sdpa() { timeout 120 python3 bench/cuda_sdpa.py 2>&1 | tee "$OUT/sdpa.jsonl"; }
# The serving benchmark on the llama-3.2-1b shape (bf16 weights): bench/serve_load.py (the figures of
# `vllm bench serve`) against one `atp serve --device cuda` on port 18000, random prompts of SERVE_IN token ids
# (1024) and SERVE_OUT new tokens each (128, ignore_eos), at each concurrency of SERVE_C (1,8,64,256) with
# SERVE_N x c prompts (4 x c, at least 16). SERVE_KV: the policy; SERVE_CTX (2048), SERVE_KV_MEMORY (40G),
# SERVE_SEQS (256), SERVE_BATCH (2048): the server's -c, --kv-memory, --max-seqs, --max-batch-tokens (e.g. SERVE_IN=8192 SERVE_OUT=256 SERVE_CTX=8448).
# SERVE_ATP: another binary to measure (e.g. a baseline build carried beside the bundle), SERVE_TAG: a
# suffix for its files: serve$TAG.txt (the tables), serve${TAG}_c$c.json, serve$TAG.log (the server's).
# The load of the serve steps against the server on PORT, at each concurrency of SERVE_C: a run labelled
# "LABEL c=$c" into $OUT/NAME_c$c.json, the tables appended to $OUT/NAME.txt.
load_levels() {  # PORT NAME LABEL
  local c n
  for c in $(echo ${SERVE_C:-1,8,64,256} | tr , ' '); do
    n=$((c * ${SERVE_N:-4})); [ $n -lt 16 ] && n=16
    timeout 300 python3 bench/serve_load.py --base-url http://127.0.0.1:$1 --ready-check-timeout-sec 180 \
      --input-len ${SERVE_IN:-1024} --output-len ${SERVE_OUT:-128} --num-prompts $n --max-concurrency $c \
      --label "$3 c=$c" --json "$OUT/$2_c$c.json" 2>&1 | tee -a "$OUT/$2.txt"
  done
}
serve() {
  [ -d /tmp/l1b ] || timeout 120 $atp testgen --shape llama-3.2-1b -o /tmp/l1b 2>&1 | tail -1
  local tag=${SERVE_TAG:-} kv=${SERVE_KV:-dense:dtype=bf16}
  ${SERVE_ATP:-$atp} serve -m /tmp/l1b --port 18000 --device cuda --kv "$kv" -c ${SERVE_CTX:-2048} \
    --kv-memory ${SERVE_KV_MEMORY:-40G} --max-seqs ${SERVE_SEQS:-256} --max-queue 4096 --max-batch-tokens ${SERVE_BATCH:-2048} \
    2>"$OUT/serve$tag.log" &
  local pid=$!
  load_levels 18000 "serve$tag" "$kv"
  kill $pid; wait $pid
}
# Nsight Compute on the decode kernels at 32k: bf16 first, then (after 2 x 16 x 22 launches of each
# of the two kernels for bf16 and fp8) fp4.
ncu_decode() {
  for skip in 0 1408; do
    timeout 120 ncu --kernel-name regex:'DecodeKernel|CombineKernel' --launch-skip $skip --launch-count 2 \
      --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active \
      /tmp/atp/bin/atp_cuda_attn 32768 2>&1 | grep -E 'Kernel|duration|throughput|warps_active' | tee -a "$OUT/ncu.txt"
  done
}

# Nsight Compute's kernel durations over decode steps of dense bf16 at 1k (launches 3000.. of a
# 64-step bench, mid-decode; no cache flush, clocks as they run), summed per step and kernel name.
ncu_steps() {
  [ -d /tmp/l1b ] || timeout 120 $atp testgen --shape llama-3.2-1b -o /tmp/l1b 2>&1 | tail -1
  timeout 300 ncu --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
    --launch-skip ${NCU_SKIP:-3000} --launch-count ${NCU_COUNT:-400} $atp bench -m /tmp/l1b --device cuda \
    --kv ${NCU_KV:-dense:dtype=bf16} --prompt-tokens 1024 --decode-context 1024 --decode-tokens 64 --repeats 1 --json \
    >/tmp/ncu.csv 2>/tmp/ncu.err; tail -2 /tmp/ncu.err
  cp /tmp/ncu.csv "$OUT/" && python3 bench/ncu_steps.py /tmp/ncu.csv | tee "$OUT/ncu_steps.txt"
}
# Nsight Compute's kernel durations over serving steps: `atp serve` (SERVE_KV, default dense bf16;
# --max-batch-tokens SERVE_BATCH, default 2048) under bench/serve_load.py at concurrency PROFILE_C (64) with
# PROFILE_IN-token prompts (1024) and 128 new tokens, NCU_COUNT launches (default 1500, ~7 steps) after
# NCU_SKIP (default 60000, ~300 steps in: prompts and decodes mixed as at steady state), cut into steps
# at the embedding lookup and summed per kernel (bench/ncu_steps.py): what a mixed step's 6 ms are made of.
# SERVE_ATP profiles another binary, as for serve.
ncu_serve() {
  [ -d /tmp/l1b ] || timeout 120 $atp testgen --shape llama-3.2-1b -o /tmp/l1b 2>&1 | tail -1
  local port=18124 c=${PROFILE_C:-64}
  timeout 420 ncu --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
    --launch-skip ${NCU_SKIP:-60000} --launch-count ${NCU_COUNT:-1500} ${SERVE_ATP:-$atp} serve -m /tmp/l1b --device cuda -c 2048 \
    --kv-memory 40G --max-seqs 256 --max-queue 4096 --max-batch-tokens ${SERVE_BATCH:-2048} \
    --kv ${SERVE_KV:-dense:dtype=bf16} --port $port >/tmp/ncu_serve.csv 2>/tmp/ncu_serve.err &
  local pid=$!
  timeout 360 python3 bench/serve_load.py --base-url http://127.0.0.1:$port --ready-check-timeout-sec 180 \
    --input-len ${PROFILE_IN:-1024} --output-len 128 --num-prompts $((8 * c)) --max-concurrency $c \
    --json "$OUT/ncu_serve_load.json" >/tmp/ncu_level.txt 2>&1 || tail -5 /tmp/ncu_level.txt
  # The server itself is stopped (SIGTERM: it drains and exits; the pattern matches its command line, not
  # ncu's or timeout's, which contain it too), so that ncu outlives it and prints.
  pkill -TERM -f "^${SERVE_ATP:-$atp} serve"; wait $pid; grep -v "^atp serve: req-" /tmp/ncu_serve.err | tail -5
  python3 bench/ncu_steps.py /tmp/ncu_serve.csv | tee "$OUT/ncu_serve.txt"
}
# Nsight Compute sections for NCU_COUNT launches of NCU_KERNEL (default: the four projections of one
# layer in decode step 20: qkv, o, gate|up, down) in a bench at context NCU_CONTEXT.
ncu_sections() {
  [ -d /tmp/l1b ] || timeout 120 $atp testgen --shape llama-3.2-1b -o /tmp/l1b 2>&1 | tail -1
  timeout 300 ncu --cache-control none --kernel-name regex:${NCU_KERNEL:-GemvKernel} --launch-skip ${NCU_SKIP:-1300} \
    --launch-count ${NCU_COUNT:-4} --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
    --section MemoryWorkloadAnalysis $atp bench -m /tmp/l1b --device cuda --kv dense:dtype=bf16 --prompt-tokens ${NCU_CONTEXT:-1024} \
    --decode-context ${NCU_CONTEXT:-1024} --decode-tokens 64 --repeats 1 --json >"$OUT/ncu_sections.txt" 2>&1
  grep -E "Gemv|Decode|Duration|Throughput|Occupancy|Registers|Stall|Active Warps|Block Limit|Waves|Bandwidth|Hit" "$OUT/ncu_sections.txt" | head -150
}

# Where a serving step's time goes: atp serve (SERVE_KV, default dense bf16) on the llama-3.2-1b shape
# under bench/serve_load.py at concurrency PROFILE_C (default 64), PROFILE_IN-token prompts (default 1024)
# and 128 new tokens; /metrics before and after each level gives forward passes and the seconds spent in
# forward passes and in choosing tokens, against the client's wall time. With Nsight Systems where the
# image has it: the kernel and CUDA API sums of 8 s of the second (longer) level, and of a 1024-token
# prefill bench.
profile() {
  [ -d /tmp/l1b ] || timeout 120 $atp testgen --shape llama-3.2-1b -o /tmp/l1b 2>&1 | tail -1
  local nsys="" port=18123 c=${PROFILE_C:-64} n
  command -v nsys >/dev/null && nsys="nsys profile -o /tmp/serve -f true --trace cuda,osrt --sample none --cpuctxsw none --delay 20 --duration 8 --kill none"
  echo "nsys: ${nsys:-absent}"
  $nsys $atp serve -m /tmp/l1b --device cuda -c 2048 --kv-memory 40G --max-seqs 256 --max-queue 4096 \
    --max-batch-tokens 2048 --kv ${SERVE_KV:-dense:dtype=bf16} --port $port 2>/tmp/serve.log >/dev/null &
  local metrics="import sys, json, urllib.request as u; print(json.dumps({l.rsplit(' ', 1)[0]: float(l.rsplit(' ', 1)[1]) for l in u.urlopen('http://127.0.0.1:$port/metrics').read().decode().splitlines() if l.startswith(('atp_forward', 'atp_step', 'atp_generated', 'atp_prompt'))}))"
  for n in $((4 * c)) $((24 * c)); do
    timeout 280 python3 bench/serve_load.py --base-url http://127.0.0.1:$port --ready-check-timeout-sec 120 \
      --input-len ${PROFILE_IN:-1024} --output-len 128 --num-prompts $n --max-concurrency $c --json /tmp/level.json \
      >/tmp/level.txt 2>&1 || tail -5 /tmp/level.txt
    python3 - "$(python3 -c "$metrics")" <<'PY' | tee -a "$OUT/profile.txt"
import json, sys
m = json.loads(sys.argv[1]); s = json.load(open("/tmp/level.json"))
prev = json.load(open("/tmp/prev.json")) if __import__("os").path.exists("/tmp/prev.json") else {}
d = {k: m[k] - prev.get(k, 0) for k in m}
json.dump(m, open("/tmp/prev.json", "w"))
steps = max(d.get("atp_forward_passes_total", 0), 1)
summary = s.get("summary", s)
print(json.dumps({"completed": summary.get("completed"), "duration_s": summary.get("duration"),
                  "output_tok_s": summary.get("output_throughput"), "steps": steps,
                  "ms_per_step": 1e3 * summary.get("duration", 0) / steps,
                  "forward_ms_per_step": 1e3 * d.get("atp_step_forward_seconds_total", 0) / steps,
                  "sample_ms_per_step": 1e3 * d.get("atp_step_sample_seconds_total", 0) / steps,
                  "prompt_tokens_per_step": d.get("atp_prompt_tokens_total", 0) / steps,
                  "generated_per_step": d.get("atp_generated_tokens_total", 0) / steps}))
PY
  done
  pkill -TERM -f "bin/atp serve"; wait
  if [ -n "$nsys" ]; then
    nsys stats --report cuda_gpu_kern_sum --report cuda_api_sum --format csv -o /tmp/serve /tmp/serve.nsys-rep >/dev/null 2>&1
    timeout 120 nsys profile -o /tmp/prefill -f true --trace cuda --sample none --cpuctxsw none $atp bench -m /tmp/l1b \
      --device cuda --kv dense:dtype=bf16 --prompt-tokens 1024 --decode-context 1024 --decode-tokens 4 --repeats 3 --json | tail -1
    nsys stats --report cuda_gpu_kern_sum --format csv -o /tmp/prefill /tmp/prefill.nsys-rep >/dev/null 2>&1
    for r in /tmp/serve_*.csv /tmp/prefill_*.csv; do echo "== $r"; head -16 "$r" | cut -c1-220; cp "$r" "$OUT/"; done
  fi
}

# llama.cpp beside atp on the card (issue 17's peer): its source travels as .peercarry/llama.cpp.tar.xz
# (`pack_peer` here; the GPU machine has no network; name .peercarry in carry too). peer_build configures
# and builds llama-server and llama-bench with CUDA for this card in the background, so that the steps
# after it run meanwhile; peer_serve waits for it, writes /tmp/l1b as an f16 GGUF (`atp convert`), runs
# llama-bench (pp1024, tg128) and then bench/serve_load.py against `llama-server -ngl 99 -fa on` with as
# many slots as the largest of SERVE_C and SERVE_CTX tokens each, at each concurrency of SERVE_C, with the
# serve step's prompts (SERVE_IN, SERVE_OUT, SERVE_N): files peer_bench.json, peer.txt, peer_c$c.json.
# peer_wait waits for the build (building now where this machine has none).
peer_build() {
  mkdir -p /tmp/llama.cpp && tar -C /tmp/llama.cpp -xJf .peercarry/llama.cpp.tar.xz || return
  (cmake -S /tmp/llama.cpp -B /tmp/llama.cpp/build -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
     -DCMAKE_CUDA_ARCHITECTURES=${PEER_ARCH:-90} -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF \
     -DLLAMA_USE_PREBUILT_UI=OFF && cmake --build /tmp/llama.cpp/build -j"$(nproc)" --target llama-server llama-bench) \
    >"$OUT/peer_build.log" 2>&1 &
  peer_pid=$!
}
peer_wait() {  # the build of peer_build, or one now if this machine has none
  [ -x /tmp/llama.cpp/build/bin/llama-server ] || [ -n "${peer_pid:-}" ] || peer_build
  [ -n "${peer_pid:-}" ] && wait $peer_pid; peer_pid=""
  tail -2 "$OUT/peer_build.log" 2>/dev/null
}
peer_serve() {
  local bin=/tmp/llama.cpp/build/bin np
  peer_wait
  [ -x $bin/llama-server ] || { echo "llama.cpp did not build:"; tail -20 "$OUT/peer_build.log"; return; }
  [ -d /tmp/l1b ] || timeout 120 $atp testgen --shape llama-3.2-1b -o /tmp/l1b 2>&1 | tail -1
  [ -f /tmp/l1b.f16.gguf ] || timeout 300 $atp convert -m /tmp/l1b -o /tmp/l1b.f16.gguf --type f16 2>&1 | tail -1
  timeout 180 $bin/llama-bench -m /tmp/l1b.f16.gguf -ngl 99 -fa 1 -p 1024 -n 128 -o json >"$OUT/peer_bench.json" 2>"$OUT/peer_bench.err"
  grep -E '"n_prompt"|"n_gen"|"avg_ts"' "$OUT/peer_bench.json"
  np=$(echo ${SERVE_C:-1,8,64,256} | tr , '\n' | sort -n | tail -1)
  $bin/llama-server -m /tmp/l1b.f16.gguf -ngl 99 -fa on -np $np -c $((np * ${SERVE_CTX:-2048})) --port 18001 \
    2>"$OUT/peer_server.log" >/dev/null &
  local pid=$!
  load_levels 18001 peer "llama-server"
  kill $pid; wait $pid
}
# Hugging Face transformers' continuous batching (bench/hf_generate_batch.py: generate_batch with paged
# attention) on the model and prompt sizes of serve: HF_N prompts (256) of SERVE_IN ids, SERVE_OUT new tokens.
hf_peer() {
  [ -d /tmp/l1b ] || timeout 120 $atp testgen --shape llama-3.2-1b -o /tmp/l1b 2>&1 | tail -1
  timeout 500 python3 bench/hf_generate_batch.py -m /tmp/l1b --input-len ${SERVE_IN:-1024} --output-len ${SERVE_OUT:-128} \
    --num-prompts ${HF_N:-256} --json "$OUT/hf_peer.json" 2>"$OUT/hf_peer.err" | tail -1
  tail -3 "$OUT/hf_peer.err"
}

for step in ${@:-tests bench attn sdpa}; do
  echo "== $step"
  $step
done
