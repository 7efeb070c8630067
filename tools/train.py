"""Train a small Llama model (or continue one) on the cache written by tools/data.py.

AdamW, linear warm-up then cosine decay, gradient clipping, bf16 autocast on CUDA (fp32 on CPU),
periodic dev loss on held-out training-source documents (never valid.txt) and teacher-forced
answer accuracy on our own generated dev retrieval docs. The cosine schedule runs on
progress = max(step/steps, elapsed/time_budget), so a wall-clock budget still ends with a
fully decayed learning rate.

Each batch row is either a random window of the prose stream, or (with --retrieval-frac)
<|begin_of_text|> + one retrieval document followed by prose, so the question always sees its fact.

    /usr/bin/python3 tools/train.py --data tools/data_cache --out /tmp/m --layers 2 --d-model 64 --steps 50
"""
import argparse
import io
import json
import lzma
import math
import os
import random
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import atp_attention  # noqa: E402
import bpe  # noqa: E402
import model as M  # noqa: E402


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="tools/data_cache", help="dir with train_data.npz, tokenizer/")
    ap.add_argument("--tokenizer", default=None, help="dir with tokenizer.json (default DATA/tokenizer)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--init", default=None, help="start from this HF checkpoint dir (shape flags ignored)")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--time-budget", type=float, default=0, help="seconds; 0 = none")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--retrieval-frac", type=float, default=0.25)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--select", choices=["last", "best"], default="last",
                    help="save the last weights, or (best) those with the lowest dev prose loss among "
                         "evals whose dev retrieval accuracy is within 0.05 of the best seen: the "
                         "small prose corpus overfits long before retrieval is learned")
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16", help="saved weight dtype")
    ap.add_argument("--kv", default="dense", help="attention used in training: dense | atp:block=,rank=,window=")
    ap.add_argument("--basis", choices=["svd", "eigh"], default="svd", help="ATP block basis method")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    return ap


def load_data(data_dir):
    """DATA/train_data.npz, or DATA/train_data.npz.xz (what `data.py --xz` writes, small enough to
    carry to the GPU machine)."""
    path = os.path.join(data_dir, "train_data.npz")
    if not os.path.exists(path) and os.path.exists(path + ".xz"):
        with lzma.open(path + ".xz") as f:
            return np.load(io.BytesIO(f.read()))
    return np.load(path)


class Batches:
    def __init__(self, d, ctx, batch, retrieval_frac, seed):
        self.prose = torch.from_numpy(d["prose_train"].astype(np.int64))
        self.dev = torch.from_numpy(d["prose_dev"].astype(np.int64))
        self.ret = torch.from_numpy(d["ret_tokens"].astype(np.int64))
        self.off = d["ret_offsets"]
        self.ctx, self.batch, self.frac = ctx, batch, retrieval_frac
        self.rng = random.Random(seed)

    def _prose(self, n):
        s = self.rng.randrange(0, len(self.prose) - n)
        return self.prose[s:s + n]

    def next(self):
        rows = []
        n_ret = int(round(self.batch * self.frac)) if len(self.off) > 1 else 0
        for r in range(self.batch):
            if r < n_ret:
                k = self.rng.randrange(len(self.off) - 1)
                doc = self.ret[self.off[k]:self.off[k + 1]][: self.ctx + 1]
                row = torch.cat([doc, self._prose(self.ctx + 1 - len(doc))]) \
                    if len(doc) < self.ctx + 1 else doc
            else:
                row = self._prose(self.ctx + 1)
            rows.append(row)
        x = torch.stack(rows)
        return x[:, :-1], x[:, 1:]

    def dev_windows(self, n=16):
        step = max(1, (len(self.dev) - self.ctx - 1) // n)
        return torch.stack([self.dev[i * step:i * step + self.ctx + 1] for i in range(n)])


def ret_dev_cases(tok, path, n=100):
    """Teacher-forced answer check on our own generated retrieval docs: (ids, answer positions)."""
    cases = []
    if not os.path.exists(path):
        return cases
    for line in list(open(path))[:n]:
        c = json.loads(line)
        p = tok.encode(c["prompt"], add_bos=True)
        a = tok.encode(c["prompt"] + " " + c["answer"], add_bos=True)
        if a[:len(p)] == p:
            cases.append((a, len(p)))
    return cases


def token_ce(logits, y):
    """Mean next-token cross-entropy of logits (..., vocab) against ids y (...), in float32."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def dev_loss(model, dev_x, attn, device, autocast):
    losses = []
    for i in range(0, len(dev_x), 8):
        x = dev_x[i:i + 8].to(device)
        with autocast():
            lg = model(x[:, :-1], attn=attn)
        losses.append(token_ce(lg, x[:, 1:]).item())
    return float(np.mean(losses))


@torch.no_grad()
def evaluate(model, dev_x, cases, attn, device, autocast):
    """Dev prose loss and teacher-forced dev retrieval accuracy under `attn`; with an ATP `attn`,
    also the dense dev loss (dev_loss_dense) and retrieval (dev_retrieval_dense) of the same
    weights: what adapting to ATP costs the model's own dense quality."""
    model.eval()
    res = {}
    for key, fn in ([("", attn)] + ([("_dense", None)] if attn is not None else [])):
        ok = 0
        for ids, p in cases:
            x = torch.tensor([ids], device=device)
            with autocast():
                pred = model(x[:, :-1], attn=fn)[0, p - 1:].argmax(-1)
            ok += bool((pred == x[0, p:]).all())
        res["dev_loss" + key] = dev_loss(model, dev_x, fn, device, autocast)
        res["dev_retrieval" + key] = ok / max(1, len(cases))
    model.train()
    return res


def cross_entropy_step(model, x, y, attn, autocast):
    """The default training loss: next-token cross-entropy under `attn`. Returns (loss, {})."""
    with autocast():
        logits = model(x, attn=attn)
    return token_ce(logits, y), {}


def train(a, step_loss=cross_entropy_step):
    """Trains per `a` (build_parser's flags). step_loss(model, x, y, attn, autocast) -> (loss,
    {name: float tensor}) is one step's objective; the named parts are logged with the loss."""
    torch.manual_seed(a.seed)
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tok_dir = a.tokenizer or (a.init if a.init else os.path.join(a.data, "tokenizer"))
    tok = bpe.Tokenizer.from_file(tok_dir)
    if a.init:
        model = M.load_checkpoint(a.init)
        model.config.dropout = a.dropout
        for blk in model.model.layers:
            blk.drop.p = a.dropout
    else:
        c = M.Config(vocab_size=len(tok), hidden_size=a.d_model, intermediate_size=a.ffn,
                     num_hidden_layers=a.layers, num_attention_heads=a.heads,
                     num_key_value_heads=a.kv_heads, head_dim=a.head_dim,
                     max_position_embeddings=max(2048, a.ctx), rope_theta=a.rope_theta,
                     bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, dropout=a.dropout)
        model = M.LlamaForCausalLM(c)
    model.to(device).train()
    pol = atp_attention.parse_policy(a.kv)
    attn = None if pol is None else atp_attention.make_attn(pol["block"], pol["rank"], pol["window"], a.basis)
    data = Batches(load_data(a.data), a.ctx, a.batch, a.retrieval_frac, a.seed)
    dev_x = data.dev_windows()
    cases = ret_dev_cases(tok, os.path.join(a.data, "dev_retrieval.jsonl"))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt_kw = {"fused": True} if cuda and "fused" in torch.optim.AdamW.__init__.__code__.co_varnames else {}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), **opt_kw)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else \
        (lambda: torch.autocast("cpu", enabled=False))
    os.makedirs(a.out, exist_ok=True)
    logf = open(os.path.join(a.out, "train_log.jsonl"), "w")
    n_params = model.num_params()
    print(f"device {device}, params {n_params}, tokens/step {a.batch * a.ctx}", flush=True)

    def log(rec):
        logf.write(json.dumps(rec) + "\n")
        logf.flush()
        print(json.dumps(rec), flush=True)

    evals = []  # every eval's record; with --init the first (step 0) is the starting weights'
    if a.init:
        evals.append(dict({"step": 0}, **evaluate(model, dev_x, cases, attn, device, autocast)))
        log(evals[-1])
    t0 = time.time()
    snaps = []  # (step, dev_loss, dev_retrieval, state) for --select best
    step, progress, loss_ema = 0, 0.0, None
    while step < a.steps and progress < 1.0:
        elapsed = time.time() - t0
        progress = max(step / a.steps, elapsed / a.time_budget if a.time_budget else 0.0)
        if step < a.warmup:
            lr = a.lr * (step + 1) / a.warmup
        else:
            lr = a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = data.next()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, parts = step_loss(model, x, y, attn, autocast)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        step += 1
        li = loss.item() if (step % 10 == 0 or step == 1) else None
        if li is not None:
            loss_ema = li if loss_ema is None else 0.9 * loss_ema + 0.1 * li
        if step % 50 == 0 or step == 1:
            log(dict({"step": step, "loss": li, "loss_ema": loss_ema, "lr": lr, "gnorm": float(gnorm),
                      "elapsed": round(time.time() - t0, 1)}, **{k: float(v) for k, v in parts.items()}))
        last = step >= a.steps or (a.time_budget and time.time() - t0 >= a.time_budget)
        if step % a.eval_every == 0 or last:
            ev = evaluate(model, dev_x, cases, attn, device, autocast)
            evals.append(dict({"step": step, "dev_ppl": math.exp(ev["dev_loss"]),
                               "elapsed": round(time.time() - t0, 1)}, **ev))
            log(evals[-1])
            if a.select == "best":
                snaps.append((step, ev["dev_loss"], ev["dev_retrieval"],
                              {k: v.detach().clone() for k, v in model.state_dict().items()}))
            if last:
                break
    selected = step
    if a.select == "best" and snaps:
        top = max(r for _, _, r, _ in snaps)
        selected, dl, racc, state = min((x for x in snaps if x[2] >= top - 0.05), key=lambda x: x[1])
        model.load_state_dict(state)
        print(f"selected step {selected}: dev_loss {dl:.4f}, dev_retrieval {racc:.2f}", flush=True)
    logf.close()
    model.eval()
    cmd = "/usr/bin/python3 " + " ".join(shlex.quote(s) for s in sys.argv)
    M.save_checkpoint(model, a.out, a.dtype, tokenizer_dir=tok_dir)
    summary = {"command": cmd, "params": n_params, "steps": step, "seconds": round(time.time() - t0, 1),
               "tokens_seen": step * a.batch * a.ctx, "device": device,
               "selected_step": selected, "evals": evals,
               "torch": torch.__version__, "args": vars(a)}
    with open(os.path.join(a.out, "train_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("command:", cmd, flush=True)
    return model, summary


def main():
    train(build_parser().parse_args())


if __name__ == "__main__":
    main()
