"""Adapt a checkpoint to ATP attention: continue training with the blockwise causal ATP attention
of tools/atp_attention.py (the same B, r, W as the engine's `atp:block=B,rank=r,window=W`),
then save an HF checkpoint plus atp_finetune.json recording the policy it was adapted to.

    /usr/bin/python3 tools/finetune_atp.py --init models/atp-12m --kv atp:block=32,rank=8,window=64 \
        --data tools/data_cache --out /tmp/atp-models/atp-12m-b32r8w64 --steps 300

--distill W distills from the frozen --init model run with dense attention (the teacher, computed
in the same batch under no_grad, temperature 1): each row's loss is (1-W) * cross-entropy +
W * KL(teacher || student), mean over tokens. Without it (W = 0) the adapted weights lost 3-13% of
their own dense quality (docs/results.md section 9). --dense-rows D runs that fraction of each
batch's rows (evenly spaced, so retrieval and prose rows alike) through the student with *dense*
attention under the same loss: the dense path is anchored to the teacher at no extra forward (the
batch is split, not duplicated), so the weights keep their dense quality while the other rows
learn to read the principal rows.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import atp_attention  # noqa: E402
import model as M  # noqa: E402
import train  # noqa: E402


def kl_teacher_student(student_logits, teacher_logits):
    """Mean over tokens of KL(p_teacher || p_student) at temperature 1, in float32."""
    s = F.log_softmax(student_logits.float().reshape(-1, student_logits.shape[-1]), dim=-1)
    t = F.log_softmax(teacher_logits.float().reshape(-1, teacher_logits.shape[-1]), dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="sum") / s.shape[0]


def distill_loss(student_logits, teacher_logits, y, weight):
    """(1 - weight) * CE(student, y) + weight * KL(teacher || student); returns (loss, ce, kl)."""
    ce = train.token_ce(student_logits, y)
    kl = kl_teacher_student(student_logits, teacher_logits)
    return (1 - weight) * ce + weight * kl, ce.detach(), kl.detach()


def dense_row_index(batch, frac):
    """Evenly spaced row indices, round(batch * frac) of them (Batches puts retrieval rows first)."""
    n = int(round(batch * frac))
    return [int((i + 0.5) * batch / n) for i in range(n)]


def make_distill_step(teacher, weight, dense_frac):
    """A train.step_loss: the student on its rows (ATP, or dense for dense_row_index), each
    against the teacher's dense logits. The loss is the token-weighted mean over all rows."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def step(model, x, y, attn, autocast):
        with torch.no_grad(), autocast():
            t_logits = teacher(x)
        dense = dense_row_index(x.shape[0], dense_frac)
        atp = [i for i in range(x.shape[0]) if i not in dense]
        loss, parts = 0.0, {}
        for name, rows, fn in (("atp", atp, attn), ("dense", dense, None)):
            if not rows:
                continue
            with autocast():
                s_logits = model(x[rows], attn=fn)
            l, ce, kl = distill_loss(s_logits, t_logits[rows], y[rows], weight)
            loss = loss + l * (len(rows) / x.shape[0])
            parts.update({f"ce_{name}": ce, f"kl_{name}": kl})
        return loss, parts
    return step


def main():
    ap = train.build_parser()
    # fine-tuning defaults: short, gentle, same data mix as pre-training
    ap.set_defaults(lr=3e-4, warmup=30, steps=300, eval_every=100, min_lr_frac=0.1)
    ap.add_argument("--distill", type=float, default=0.0, metavar="W",
                    help="weight of KL(dense teacher = the --init model || student); 0 = cross-entropy only")
    ap.add_argument("--dense-rows", type=float, default=0.0, metavar="D",
                    help="with --distill: fraction of each batch's rows the student runs densely")
    a = ap.parse_args()
    if not a.init:
        ap.error("--init CHECKPOINT is required")
    if atp_attention.parse_policy(a.kv) is None:
        ap.error("--kv must be an atp policy, e.g. atp:block=32,rank=8,window=64")
    if not 0.0 <= a.distill <= 1.0 or not 0.0 <= a.dense_rows < 1.0:
        ap.error("--distill must be in [0, 1] and --dense-rows in [0, 1)")
    if len(dense_row_index(a.batch, a.dense_rows)) >= a.batch:
        ap.error(f"--dense-rows {a.dense_rows} leaves no ATP row in a batch of {a.batch}")
    if a.dense_rows and not a.distill:
        ap.error("--dense-rows needs --distill (the dense rows are anchored to the teacher)")
    step = train.cross_entropy_step
    if a.distill:
        device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
        step = make_distill_step(M.load_checkpoint(a.init, device=device), a.distill, a.dense_rows)
    _, summary = train.train(a, step)
    with open(os.path.join(a.out, "atp_finetune.json"), "w") as f:
        json.dump({"base": a.init, "kv": a.kv, "basis": a.basis, "steps": summary["steps"],
                   "distill": a.distill, "dense_rows": a.dense_rows, "evals": summary["evals"],
                   "command": summary["command"]}, f, indent=1)


if __name__ == "__main__":
    main()
