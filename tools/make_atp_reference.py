"""Write tests/data/atp_reference.safetensors (+ .json): one attention layer's inputs and the
outputs of tools/atp_attention.py, so the engine's C++ `atp` policy can be checked against PyTorch.

Inputs are seeded Gaussians, float32; X gets geometrically decaying column scales (0.75^j, then a
random rotation) so each block's singular values are well separated. The seed is the first one
for which every block of both
configurations has a clear spectral gap after singular value r and column sums of U_r away from
zero: otherwise the top-r subspace or the sign convention would be ill-conditioned and a correct
float32 engine could legitimately disagree with this float64 reference.

    /usr/bin/python3 tools/make_atp_reference.py --out tests/data/atp_reference
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import atp_attention as A  # noqa: E402
import model as M  # noqa: E402
import safetensors_io as st  # noqa: E402

T, D, H, KV, HD = 200, 64, 4, 2, 16
CONFIGS = [(32, 8, 32), (16, 4, 0)]  # (block, rank, window)
MIN_GAP, MIN_COLSUM = 0.05, 0.05


def well_conditioned(x):
    worst = {"gap": 1e9, "colsum": 1e9}
    for B, r, _ in CONFIGS:
        nb = T // B
        xb = x[: nb * B].reshape(nb, B, D)
        U, S, _ = torch.linalg.svd(xb, full_matrices=False)
        gap = ((S[:, r - 1] - S[:, r]) / S[:, r - 1]).min().item()
        colsum = U[..., :r].sum(-2).abs().min().item()
        worst["gap"] = min(worst["gap"], gap)
        worst["colsum"] = min(worst["colsum"], colsum)
    return worst["gap"] > MIN_GAP and worst["colsum"] > MIN_COLSUM, worst


def to_rows(o):
    """[1, heads, T, hd] -> [T, heads*hd] (head h in columns h*hd .. h*hd+hd-1)."""
    return o[0].transpose(0, 1).reshape(o.shape[2], -1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/data/atp_reference")
    a = ap.parse_args()
    scales = 0.75 ** torch.arange(D, dtype=torch.float32)
    for seed in range(1000):
        g = torch.Generator().manual_seed(seed)
        rot = torch.linalg.qr(torch.randn(D, D, generator=g))[0]
        X = (torch.randn(T, D, generator=g) * scales) @ rot
        ok, worst = well_conditioned(X.double())
        if ok:
            break
    else:
        raise SystemExit("no well-conditioned seed found")
    Q = torch.randn(T, H * HD, generator=g)
    K = torch.randn(T, KV * HD, generator=g)
    V = torch.randn(T, KV * HD, generator=g)
    x = X.double()[None]
    q = Q.double().view(T, H, HD).transpose(0, 1)[None]
    k = K.double().view(T, KV, HD).transpose(0, 1)[None]
    v = V.double().view(T, KV, HD).transpose(0, 1)[None]
    tensors = {"X": X, "Q": Q, "K": K, "V": V,
               "O_dense": to_rows(M.dense_attention(0, x, q, k, v)).float()}
    outputs = {}
    for B, r, W in CONFIGS:
        name = f"O_b{B}_r{r}_w{W}"
        tensors[name] = to_rows(A.atp_attention(x, q, k, v, B, r, W, "svd")).float()
        nb = T // B
        tensors[f"U_b{B}_r{r}"] = A.block_basis(x[0, : nb * B].reshape(nb, B, D), r, "svd").float()
        outputs[name] = {"policy": f"atp:block={B},rank={r},window={W}", "block": B, "rank": r, "window": W,
                         "basis": f"U_b{B}_r{r}"}
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    st.save_file(tensors, a.out + ".safetensors", metadata={"generator": "tools/make_atp_reference.py"})
    desc = {
        "generator": "/usr/bin/python3 tools/make_atp_reference.py --out " + a.out,
        "seed": seed, "T": T, "d_model": D, "n_heads": H, "n_kv_heads": KV, "head_dim": HD,
        "positions": "0..T-1, one sequence",
        "layout": "rows are positions; Q and O columns are head-major (head h at h*head_dim..), "
                  "K and V likewise per KV head; query head h uses KV head h // (n_heads / n_kv_heads)",
        "inputs": {"X": "layer input after the input RMSNorm [T, d_model]",
                   "Q": "queries [T, n_heads*head_dim]", "K": "post-RoPE keys [T, n_kv*head_dim]",
                   "V": "values [T, n_kv*head_dim]"},
        "outputs": outputs,
        "O_dense": "plain causal softmax attention, scale 1/sqrt(head_dim)",
        "U_bB_rR": "[T//B, B, r] sign-fixed top-r left singular vectors of each full block of X",
        "rule": "query i sees block b compressed iff (b+1)*B + W <= i (principal rows U_r^T K_b, U_r^T V_b), "
                "else exact keys j <= i; one softmax; the partial last block is never compressed",
        "computed_in": "float64 from the float32 inputs, stored as F32",
        "conditioning": {"min_relative_gap_after_rank": worst["gap"], "min_abs_column_sum": worst["colsum"]},
        "suggested_tolerance": 1e-4,
    }
    with open(a.out + ".json", "w") as f:
        json.dump(desc, f, indent=1)
    print(json.dumps({k: desc[k] for k in ("seed", "conditioning")}))


if __name__ == "__main__":
    main()
