#!/bin/bash
# GPU jobs for the default model, run from the repo root on the device machine (the `run` tool),
# with tools/data_cache/{train_data.npz,tokenizer,dev_retrieval.jsonl,eval} carried over.
# Results go to $OUT (at most 8 files, 16 MiB each, come back): checkpoints are tarred and split.
#   tools/device_run.sh smoke | main | all | final | atp | big | stage_base | atp_distill
#   (all = main, then the ATP fine-tunes; final = continue models/atp-12m, then the fine-tunes;
#    big = the larger, longer-context model of models/atp-40m on DATA=tools/data_cache/big;
#    stage_base, then atp_distill: a checkpoint adapted to ATP with distillation, below)
#   tools/device_run.sh pack_base [MODEL_DIR]   (here, not there) MODEL_DIR (default models/atp-40m)
#       as .distillcarry/base (git-excluded; name it in carry), weights xz-compressed: atp-40m's
#       77 MB are 54 MB, still too large to travel beside its 16 MB of training data (64 MiB in all)
#
# Distillation (issue 19), two calls back to back on the same warm machine (it goes back after 30 s idle):
#   1. carry .distillcarry and tools/data_cache/eval: `tools/device_run.sh stage_base` unpacks the base to
#      $W/base (outside the tree: kept while the machine stays warm) and scores it, dense and ATP;
#   2. carry tools/data_cache/big/{train_data.npz.xz,dev_retrieval.jsonl} and tools/data_cache/eval: `CTX=2048 BATCH=16 tools/device_run.sh atp_distill`
#      fine-tunes $W/base with ATP, distilled from its own dense logits, scores the result dense and ATP,
#      and returns it xz-compressed in < 16 MiB pieces with summary_$FTAG.json.
set -euo pipefail
MODE=$1
OUT=${OUT:-/tmp/out}
PY=${PY:-python3}
SHAPE=${SHAPE:-"--layers 8 --d-model 384 --heads 6 --kv-heads 2 --head-dim 64 --ffn 768"}
BIG_SHAPE="--layers 12 --d-model 512 --heads 8 --kv-heads 2 --head-dim 64 --ffn 1536"
CTX=${CTX:-1024}; BATCH=${BATCH:-32}   # tokens per step CTX x BATCH
W=${W:-/tmp/work}

if [ "$MODE" = pack_base ]; then
  SRC=${2:-models/atp-40m}; D=.distillcarry/base
  exclude=$(git rev-parse --git-path info/exclude)
  grep -qx "/.distillcarry/" "$exclude" 2>/dev/null || echo "/.distillcarry/" >>"$exclude"
  rm -rf .distillcarry && mkdir -p $D
  cp $SRC/config.json $SRC/tokenizer.json $SRC/tokenizer_config.json $D/
  (cd $SRC && sha256sum model.safetensors) >$D/model.safetensors.sha256
  xz -T0 -6 --block-size=8MiB -c $SRC/model.safetensors >$D/model.safetensors.xz
  du -b .distillcarry/base/*
  exit 0
fi

mkdir -p $W $OUT
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"

EV=${EV:-tools/data_cache/eval}   # copies of /work/shared/data/valid*.{txt,jsonl}: the device has no /work/shared

pack() {  # tar a checkpoint dir into <16 MiB pieces (the per-file limit of what comes back)
  tar -C $W -cf - "$@" | split -b 15M -d - $OUT/$1.tar.
}

pack_xz() {  # the same, xz-compressed: atp-40m's 77 MB come back in one call (54 MB; 64 MiB per call)
  tar -C $W -cf - "$@" | xz -T0 -6 --block-size=8MiB | split -b 15M -d - $OUT/$1.tar.xz.
}

score() {  # score MODEL KV TAG: whole-file perplexity of valid.txt and the first $RCASES retrieval cases
  timeout ${ETIME:-120} $PY tools/evaluate.py -m $1 --kv $2 --basis eigh -f $EV/valid.txt \
      --retrieval $EV/valid_retrieval.jsonl --max-cases ${RCASES:-32} --json | tee -a $OUT/eval_$3.jsonl ||
      { echo "score $1 $2: failed or over ETIME=${ETIME:-120} s" >&2; return 1; }
}

atp_finetunes() {  # FTAG names the outputs; RET=0 evaluates perplexity only (seconds, not minutes)
  local BASE=$1 FSTEPS=${FSTEPS:-400} FBUDGET=${FBUDGET:-60} TAG=${FTAG:-atp}
  local EVRET="--retrieval $EV/valid_retrieval.jsonl"
  if [ "${RET:-1}" = 0 ]; then EVRET=--no-retrieval; fi
  set +e   # an ATP failure must not cost the base model's results
  for R in 16 8; do
    KV=atp:block=32,rank=$R,window=64
    $PY tools/finetune_atp.py --init $BASE --data ${DATA:-tools/data_cache} --out $W/$TAG-r$R --kv $KV \
        --basis eigh --steps $FSTEPS --time-budget $FBUDGET --ctx $CTX --batch $BATCH --lr 3e-4 \
        --dropout 0.1 --retrieval-frac ${RFRAC:-0.5} --eval-every 100 2>&1 | grep -v '"loss"' | tail -6
    pack $TAG-r$R
    for MP in "$BASE $KV" "$W/$TAG-r$R $KV" "$W/$TAG-r$R dense"; do
      set -- $MP
      timeout ${ETIME:-70} $PY tools/evaluate.py -m $1 --kv $2 --basis eigh -f $EV/valid.txt \
          $EVRET --json | tee -a $OUT/eval_$TAG.jsonl
    done
  done
}

case $MODE in
smoke)
  $PY tools/train.py --data ${DATA:-tools/data_cache} --out $W/smoke $SHAPE --ctx $CTX --batch $BATCH \
      --steps ${STEPS:-40} --warmup 10 --eval-every 40 2>&1 | tail -4
  if [ "${QUICK:-0}" = 1 ]; then exit 0; fi   # shape, data and throughput only
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
stage_base)
  rm -rf $W/base && mkdir -p $W/base
  cp .distillcarry/base/*.json .distillcarry/base/model.safetensors.sha256 $W/base/
  xz -dc -T0 .distillcarry/base/model.safetensors.xz >$W/base/model.safetensors
  (cd $W/base && sha256sum -c model.safetensors.sha256)
  for KV in dense ${KV:-atp:block=32,rank=8,window=64}; do score $W/base $KV base; done
  ;;
atp_distill)
  # issue 19: adapt $BASE to ATP (r/B = 8/32 = 1/4, the engine's atp:block=32,rank=8,window=64 with
  # eigh bases: the same subspace as its SVD) with loss (1-W) CE + W KL(dense base || student);
  # DENSE_ROWS of each batch's rows run densely under the same loss to keep the weights' own dense
  # quality; 3/4 retrieval rows. ~5.5 min on an H100 with FBUDGET=210 (training) plus scoring.
  BASE=${BASE:-$W/base}; KV=${KV:-atp:block=32,rank=8,window=64}; TAG=${FTAG:-distill}
  if [ ! -f $BASE/model.safetensors ]; then
    echo "no $BASE/model.safetensors: run stage_base in the call just before (same warm machine)" >&2; exit 2
  fi
  $PY tools/finetune_atp.py --init $BASE --data ${DATA:-tools/data_cache/big} --out $W/$TAG --kv $KV \
      --basis eigh --distill ${DISTILL:-0.9} --dense-rows ${DENSE_ROWS:-0.25} --steps ${FSTEPS:-100000} \
      --time-budget ${FBUDGET:-210} --ctx $CTX --batch $BATCH --lr ${LR:-3e-4} --warmup 50 \
      --dropout ${DROPOUT:-0} --retrieval-frac ${RFRAC:-0.75} --eval-every ${EVERY:-250} 2>&1 | grep -v '"loss"'
  pack_xz $TAG
  for MP in "$BASE dense" "$W/$TAG dense" "$W/$TAG $KV"; do score $MP $TAG; done
  $PY - $W/$TAG $OUT/eval_$TAG.jsonl >$OUT/summary_$TAG.json <<'PY'
import json, sys
ft = json.load(open(sys.argv[1] + "/atp_finetune.json"))
tr = json.load(open(sys.argv[1] + "/train_summary.json"))
ev = [json.loads(l) for l in open(sys.argv[2])]
base, dense, atp = ev[0]["ppl"], ev[1]["ppl"], ev[2]["ppl"]
print(json.dumps({"finetune": ft, "seconds": tr["seconds"], "tokens_seen": tr["tokens_seen"],
                  "device": tr["device"], "torch": tr["torch"], "eval": ev,
                  "dense_vs_base_dense": dense / base - 1, "atp_vs_base_dense": atp / base - 1,
                  "atp_vs_own_dense": atp / dense - 1, "dense_within_1pct": dense / base - 1 <= 0.01},
                 indent=1))
PY
  grep -E '^ "(seconds|tokens_seen|dense_vs_base_dense|atp_vs_base_dense|atp_vs_own_dense|dense_within_1pct)"' $OUT/summary_$TAG.json
  ;;
big)
  # models/atp-40m: context 2048, prose + Debian docs/reference text, retrieval docs up to the
  # full context
  $PY tools/train.py --data ${DATA:-tools/data_cache/big} --out $W/big $BIG_SHAPE --ctx 2048 --batch 16 \
      --steps ${STEPS:-20000} --time-budget ${BUDGET:-525} --lr 1e-3 --warmup 200 --dropout ${DROPOUT:-0.1} \
      --retrieval-frac ${RFRAC:-0.4} --eval-every 500 --select best 2>&1 | grep -v '"loss"' | tail -30
  pack big
  $PY tools/evaluate.py -m $W/big -f $EV/valid.txt --no-retrieval --json | tee $OUT/eval_big.json
  # Its ATP fine-tunes go in a later call: a call brings back about 64 MiB in all, and each 77 MB
  # checkpoint is 5 pieces (the model card lists the calls that fetched them):
  #   BASE=$W/big DATA=tools/data_cache/big CTX=2048 BATCH=16 FTAG=big-atp RET=0 FBUDGET=45 tools/device_run.sh atp
  ;;
esac
ls -la $OUT
