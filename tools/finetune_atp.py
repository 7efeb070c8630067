"""Adapt a checkpoint to ATP attention: continue training with the blockwise causal ATP attention
of tools/atp_attention.py (the same B, r, W as the engine's `atp:block=B,rank=r,window=W`),
then save an HF checkpoint plus atp_finetune.json recording the policy it was adapted to.

    /usr/bin/python3 tools/finetune_atp.py --init models/atp-12m --kv atp:block=32,rank=8,window=64 \
        --data tools/data_cache --out /tmp/atp-models/atp-12m-b32r8w64 --steps 300
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import atp_attention  # noqa: E402
import train  # noqa: E402


def main():
    ap = train.build_parser()
    # fine-tuning defaults: short, gentle, same data mix as pre-training
    ap.set_defaults(lr=3e-4, warmup=30, steps=300, eval_every=100, min_lr_frac=0.1)
    a = ap.parse_args()
    if not a.init:
        ap.error("--init CHECKPOINT is required")
    if atp_attention.parse_policy(a.kv) is None:
        ap.error("--kv must be an atp policy, e.g. atp:block=32,rank=8,window=64")
    _, summary = train.train(a)
    with open(os.path.join(a.out, "atp_finetune.json"), "w") as f:
        json.dump({"base": a.init, "kv": a.kv, "basis": a.basis, "steps": summary["steps"],
                   "command": summary["command"]}, f, indent=1)


if __name__ == "__main__":
    main()
