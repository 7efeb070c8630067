#!/bin/bash
# GPU jobs for the default model, run from the repo root on the device machine (the `run` tool),
# with tools/data_cache/{train_data.npz,tokenizer,dev_retrieval.jsonl,eval} carried over.
# Results go to $OUT (at most 8 files, 16 MiB each, come back): checkpoints are tarred and split.
#   tools/device_run.sh smoke | main | all | final | atp
#   (all = main, then the ATP fine-tunes; final = continue models/atp-12m, then the fine-tunes)
set -euo pipefail
MODE=$1
OUT=${OUT:-/tmp/out}
PY=python3
SHAPE=${SHAPE:-"--layers 8 --d-model 384 --heads 6 --kv-heads 2 --head-dim 64 --ffn 768"}
W=/tmp/work
mkdir -p $W $OUT
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"

EV=tools/data_cache/eval   # copies of /work/shared/data/valid*.{txt,jsonl}: the device has no /work/shared

pack() {  # tar a checkpoint dir into <16 MiB pieces (the per-file limit of what comes back)
  tar -C $W -cf - "$@" | split -b 15M -d - $OUT/$1.tar.
}

atp_finetunes() {
  local BASE=$1 FSTEPS=${FSTEPS:-400} FBUDGET=${FBUDGET:-60}
  set +e   # an ATP failure must not cost the default model's results
  for R in 16 8; do
    KV=atp:block=32,rank=$R,window=64
    $PY tools/finetune_atp.py --init $BASE --data ${DATA:-tools/data_cache} --out $W/atp-r$R --kv $KV \
        --basis eigh --steps $FSTEPS --time-budget $FBUDGET --ctx 1024 --batch 32 --lr 3e-4 \
        --dropout 0.1 --retrieval-frac ${RFRAC:-0.5} --eval-every 100 2>&1 | grep -v '"loss"' | tail -6
    pack atp-r$R
    for MP in "$BASE $KV" "$W/atp-r$R $KV" "$W/atp-r$R dense"; do
      set -- $MP
      timeout ${ETIME:-70} $PY tools/evaluate.py -m $1 --kv $2 --basis eigh -f $EV/valid.txt \
          --retrieval $EV/valid_retrieval.jsonl --json | tee -a $OUT/eval_atp.jsonl
    done
  done
}

case $MODE in
smoke)
  $PY tools/train.py --data ${DATA:-tools/data_cache} --out $W/smoke $SHAPE --ctx 1024 --batch 32 \
      --steps 40 --warmup 10 --eval-every 40 2>&1 | tail -4
  $PY tools/evaluate.py -m $W/smoke --max-cases 20
  for B in eigh svd; do
    $PY tools/finetune_atp.py --init $W/smoke --data ${DATA:-tools/data_cache} --out $W/smoke-atp-$B \
        --kv atp:block=32,rank=8,window=64 --basis $B --steps 20 --eval-every 20 --ctx 1024 --batch 32 2>&1 | tail -2
  done
  $PY tools/evaluate.py -m $W/smoke-atp-eigh --max-cases 20 --kv atp:block=32,rank=8,window=64
  ;;
main|all)
  # the default model; `all` then adapts it to ATP at r/B = 1/2 and 1/4 in the same call
  STEPS=${STEPS:-3500}; BUDGET=${BUDGET:-190}
  $PY tools/train.py --data ${DATA:-tools/data_cache} --out $W/main $SHAPE --ctx 1024 --batch 32 \
      --steps $STEPS --time-budget $BUDGET --lr 1.5e-3 --warmup 150 --dropout ${DROPOUT:-0.2} \
      --retrieval-frac ${RFRAC:-0.5} --eval-every 250 --select best 2>&1 | grep -v '"loss"' | tail -40
  pack main                         # before evaluating: a failing eval must not lose the weights
  $PY tools/evaluate.py -m $W/main -f $EV/valid.txt --retrieval $EV/valid_retrieval.jsonl --json \
      | tee $OUT/eval_main.json
  if [ $MODE = all ]; then atp_finetunes $W/main; fi
  ;;
final)
  # continue the default model (models/atp-12m) with a retrieval-heavy mix, then ATP fine-tunes
  $PY tools/train.py --init models/atp-12m --data ${DATA:-tools/data_cache} --out $W/cont --ctx 1024 --batch 32 \
      --steps ${STEPS:-2500} --time-budget ${BUDGET:-100} --lr 5e-4 --warmup 50 --dropout 0.2 \
      --retrieval-frac 0.75 --eval-every 250 --select best 2>&1 | grep -v '"loss"' | tail -14
  pack cont
  $PY tools/evaluate.py -m $W/cont -f $EV/valid.txt --retrieval $EV/valid_retrieval.jsonl --json \
      | tee $OUT/eval_main.json
  if [ -f $W/cont/model.safetensors ]; then atp_finetunes $W/cont; else atp_finetunes models/atp-12m; fi
  ;;
atp)
  atp_finetunes ${BASE:?}
  ;;
esac
ls -la $OUT
