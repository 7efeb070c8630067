#!/bin/bash
# GPU jobs for the default model, run from the repo root on the device machine (the `run` tool),
# with tools/data_cache/{train_data.npz,tokenizer,dev_retrieval.jsonl} carried over.
# Results go to $OUT (at most 8 files come back), so checkpoints are packed into one tar each.
#   tools/device_run.sh smoke | main | atp
set -euo pipefail
MODE=$1
OUT=${OUT:-/tmp/out}
PY=python3
SHAPE=${SHAPE:-"--layers 8 --d-model 384 --heads 6 --kv-heads 2 --head-dim 64 --ffn 768"}
W=/tmp/work
mkdir -p $W $OUT
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"

case $MODE in
smoke)
  $PY tools/train.py --data tools/data_cache --out $W/smoke $SHAPE --ctx 1024 --batch 32 \
      --steps 40 --warmup 10 --eval-every 40 2>&1 | tail -4
  $PY tools/evaluate.py -m $W/smoke --max-cases 20
  for B in eigh svd; do
    $PY tools/finetune_atp.py --init $W/smoke --data tools/data_cache --out $W/smoke-atp-$B \
        --kv atp:block=32,rank=8,window=64 --basis $B --steps 20 --eval-every 20 --ctx 1024 --batch 32 2>&1 | tail -2
  done
  $PY tools/evaluate.py -m $W/smoke-atp-eigh --max-cases 20 --kv atp:block=32,rank=8,window=64
  ;;
main)
  STEPS=${STEPS:-4000}; BUDGET=${BUDGET:-420}
  $PY tools/train.py --data tools/data_cache --out $W/main $SHAPE --ctx 1024 --batch 32 \
      --steps $STEPS --time-budget $BUDGET --lr 1.5e-3 --warmup 150 --dropout ${DROPOUT:-0.1} \
      --retrieval-frac 0.25 --eval-every 250 --select best 2>&1 | grep -v '"loss"' | tail -40
  tar -C $W -cf $OUT/main.tar main   # before evaluating: a failing eval must not lose the weights
  $PY tools/evaluate.py -m $W/main --json > $OUT/eval_dense.json
  cat $OUT/eval_dense.json
  ;;
atp)
  # base model passed in as models/$BASE; two adapted variants at r/B = 1/2 and 1/4
  BASE=${BASE:?}; STEPS=${STEPS:-400}; BUDGET=${BUDGET:-150}
  for R in 16 8; do
    KV=atp:block=32,rank=$R,window=64
    $PY tools/evaluate.py -m $BASE --kv $KV --json > $W/base_r$R.json &
    $PY tools/finetune_atp.py --init $BASE --data tools/data_cache --out $W/atp-r$R --kv $KV \
        --basis eigh --steps $STEPS --time-budget $BUDGET --ctx 1024 --batch 32 --lr 3e-4 \
        --eval-every 100 2>&1 | grep -v '"loss"' | tail -8
    wait
    $PY tools/evaluate.py -m $W/atp-r$R --kv $KV --json > $W/atp-r$R/eval_atp.json
    $PY tools/evaluate.py -m $W/atp-r$R --json > $W/atp-r$R/eval_dense.json
    cp $W/base_r$R.json $W/atp-r$R/eval_base_atp.json
    cat $W/atp-r$R/*.json | cut -c1-600
    tar -C $W -cf $OUT/atp-r$R.tar atp-r$R
  done
  ;;
esac
ls -la $OUT
