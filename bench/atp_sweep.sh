#!/usr/bin/env bash
# Perplexity of dense, atp and lowrank policies under the evaluation protocol, as a markdown table.
# usage: bench/atp_sweep.sh ATP_BINARY MODEL_DIR EVAL_TEXT CALIB_TEXT OUT_DIR
# The calibration text for `lowrank` must not be the evaluation text.
set -euo pipefail
atp=$1 model=$2 text=$3 calib=$4 out=$5
mkdir -p "$out"
"$atp" calibrate -m "$model" -f "$calib" -o "$out/kv_basis.safetensors" --max-windows 64 2>/dev/null
hd=$("$atp" inspect -m "$model" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["head_dim"])')
policies=(dense)
for B in 32 64; do for div in 2 4 8; do policies+=("atp:block=$B,rank=$((B / div)),window=$B"); done; done
for div in 2 4; do r=$((hd / div)); policies+=("lowrank:rk=$r,rv=$r,file=$out/kv_basis.safetensors"); done
: > "$out/ppl.jsonl"
for p in "${policies[@]}"; do
  echo "sweep: $p" >&2
  "$atp" perplexity -m "$model" -f "$text" --kv "$p" --chunked --json 2>/dev/null >> "$out/ppl.jsonl"
done
python3 - "$out/ppl.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
dense = next(r for r in rows if r["kv"].startswith("dense"))
print("| policy | perplexity | vs dense | KV bytes/token | relative to dense |")
print("|---|---|---|---|---|")
for r in rows:
    print(f"| `{r['kv']}` | {r['ppl']:.2f} | {100*(r['ppl']/dense['ppl']-1):+.1f}% | {r['kv_bytes_per_token']:.0f} | {r['kv_bytes_per_token']/r['kv_bytes_per_token_dense']:.3f} |")
PY
