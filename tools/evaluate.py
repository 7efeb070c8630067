"""PyTorch reference evaluation under docs/docs/design.md section 5.

Perplexity: token stream = <|begin_of_text|> + the whole file encoded as one text; window k is
tokens [512k, 512k+512) (full windows only); the first C=384 are context, the last S=128 are
scored. With an ATP policy, a single causal pass with the ATP mask equals prefill-then-decode
(visibility depends on positions only). Retrieval: greedy continuation of
<|begin_of_text|> + prompt; correct iff the generated text, stripped, starts with the answer.

    /usr/bin/python3 tools/evaluate.py -m models/atp-12m [--kv atp:block=32,rank=8,window=64] --json
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import atp_attention  # noqa: E402
import bpe  # noqa: E402
import model as M  # noqa: E402

VALID = "/work/shared/data/valid.txt"
VALID_RET = "/work/shared/data/valid_retrieval.jsonl"


def pick_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def attn_for(policy, method="svd"):
    p = atp_attention.parse_policy(policy)
    return None if p is None else atp_attention.make_attn(p["block"], p["rank"], p["window"], method)


@torch.no_grad()
def perplexity(model, ids, context=384, scored=128, attn=None, batch=8):
    dev = next(model.parameters()).device
    W = context + scored
    n = len(ids) // W
    x = torch.tensor(ids[:n * W], dtype=torch.long, device=dev).view(n, W)
    nll = 0.0
    for s in range(0, n, batch):
        xb = x[s:s + batch]
        logits = model(xb[:, :-1], attn=attn).float()
        lp = F.cross_entropy(logits[:, context - 1:].reshape(-1, logits.shape[-1]),
                             xb[:, context:].reshape(-1), reduction="sum")
        nll += lp.item()
    tok = n * scored
    return {"ppl": math.exp(nll / tok), "nll": nll / tok, "scored_tokens": tok, "windows": n,
            "context": context, "scored_per_window": scored, "windows_start_every": W}


@torch.no_grad()
def greedy(model, ids, n_new, attn=None, stop=None):
    dev = next(model.parameters()).device
    x = torch.tensor([ids], dtype=torch.long, device=dev)
    out = []
    for _ in range(n_new):
        # full recompute each step: prompts are short, and it is exactly causal for ATP too
        nxt = int(model(x, attn=attn)[0, -1].float().argmax())
        out.append(nxt)
        if stop and stop(out):
            break
        x = torch.cat([x, torch.tensor([[nxt]], device=dev)], dim=1)
    return out


def retrieval(model, tok, cases, attn=None, n_new=8):
    correct, by_kind, rows = 0, {}, []
    for c in cases:
        ids = tok.encode(c["prompt"], add_bos=True)
        # stop once the answer's characters are out (saves forwards, same verdict)
        gen = greedy(model, ids, n_new, attn,
                     stop=lambda o: len(tok.decode(o).strip()) >= len(c["answer"]) + 1)
        text = tok.decode(gen)
        ok = text.strip().startswith(c["answer"])
        correct += ok
        k = by_kind.setdefault(c.get("kind", "all"), [0, 0])
        k[0] += ok
        k[1] += 1
        rows.append({"answer": c["answer"], "generated": text, "ok": ok})
    return {"accuracy": correct / max(1, len(cases)), "correct": correct, "cases": len(cases),
            "by_kind": {k: v[0] / v[1] for k, v in by_kind.items()}}, rows


def evaluate_dir(path, policy=None, valid=VALID, valid_ret=VALID_RET, device=None, max_cases=None,
                 method="svd"):
    """Dense or ATP perplexity + retrieval (skipped when valid_ret is None) of one checkpoint dir,
    fp32 weights."""
    device = device or pick_device()
    model = M.load_checkpoint(path, device=device).eval()
    tok = bpe.Tokenizer.from_file(path)
    attn = attn_for(policy, method)
    t0 = time.time()
    ids = tok.encode(open(valid, encoding="utf-8").read(), add_bos=True)
    res = {"model": path, "kv": policy or "dense", "file": valid, "device": device,
           "atp_basis": method if attn else None}
    res.update(perplexity(model, ids, attn=attn))
    if valid_ret:
        cases = [json.loads(l) for l in open(valid_ret)]
        if max_cases:
            cases = cases[:max_cases]
        r, _ = retrieval(model, tok, cases, attn=attn)
        res["retrieval"] = dict(r, file=valid_ret)
    res["seconds"] = round(time.time() - t0, 1)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--kv", default="dense", help="dense | atp:block=B,rank=r,window=W")
    ap.add_argument("-f", "--file", default=VALID)
    ap.add_argument("--retrieval", default=VALID_RET)
    ap.add_argument("--max-cases", type=int, default=None)
    ap.add_argument("--no-retrieval", action="store_true", help="perplexity only (seconds on a GPU)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--basis", choices=["svd", "eigh"], default="svd",
                    help="ATP block basis: svd (the definition) or eigh of X X^T (same subspace, faster on GPU)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = evaluate_dir(a.model, a.kv, a.file, None if a.no_retrieval else a.retrieval, a.device,
                       a.max_cases, a.basis)
    if a.json:
        print(json.dumps(res))
    else:
        r = res.get("retrieval")
        print(f"{a.model} kv={res['kv']}: ppl {res['ppl']:.2f} over {res['scored_tokens']} tokens"
              + (f"; retrieval {r['correct']}/{r['cases']} {r['by_kind']}" if r else ""))


if __name__ == "__main__":
    main()
