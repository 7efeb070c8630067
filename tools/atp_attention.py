"""Blockwise causal ATP attention (docs/docs/design.md section 4), as a differentiable PyTorch function.

Positions are grouped in blocks of B. A query at position i sees block b *compressed* iff
(b+1)*B + W <= i, otherwise it sees that block's exact keys j <= i. Compressing a block:
  X_b (B x d_model, the input-RMSNorm output) = U S V^T (thin SVD); U_r = top r columns of U,
  each column's sign flipped so its entries sum to >= 0; principal keys U_r^T K_b and values
  U_r^T V_b per KV head (K_b post-RoPE). One softmax per query over the principal rows of the
  blocks it sees compressed plus its exact keys, scale 1/sqrt(head_dim). GQA: query head h
  uses KV head h // (H / KV). U is treated as a constant (detached): gradients reach W_k/W_v
  through K_b and V_b, not through the SVD.

Since which form a query sees depends on positions only, evaluating all T queries at once with
the mask below equals the engine's prefill-then-decode evaluation token by token.
"""
import math

import torch
import torch.nn.functional as F


def block_basis(xb, rank, method="svd"):
    """xb [..., B, d] -> U_r [..., B, r] with the sign convention (column sums >= 0).
    method "svd": torch.linalg.svd in float64 on CPU / float32 on GPU (the definition).
    method "eigh": eigenvectors of the B x B Gram matrix X X^T, the same left singular
    subspace; much faster batched on GPU, used for fine-tuning only."""
    dt = torch.float64 if xb.device.type == "cpu" else torch.float32
    x = xb.detach().to(dt)
    # autocast off: under bf16 autocast the Gram product would be bf16, which eigh rejects
    with torch.autocast(device_type=xb.device.type, enabled=False):
        if method == "svd":
            U = torch.linalg.svd(x, full_matrices=False)[0]
        elif method == "eigh":
            evals, evecs = torch.linalg.eigh(x @ x.transpose(-1, -2))
            U = evecs.flip(-1)  # eigh sorts ascending; SVD order is descending
        else:
            raise ValueError(f"unknown basis method {method!r}")
    U = U[..., :rank]
    sign = torch.where(U.sum(dim=-2, keepdim=True) >= 0, 1.0, -1.0).to(U.dtype)
    return (U * sign).detach()


def atp_mask(T, block, window, rank, device):
    """Boolean [T, nb*r + T] visibility: principal rows of full blocks, then the exact keys."""
    nb = T // block
    i = torch.arange(T, device=device)[:, None]
    # principal row k belongs to block k // r
    pb = (torch.arange(nb * rank, device=device) // rank)[None, :]
    see_principal = (pb + 1) * block + window <= i
    j = torch.arange(T, device=device)[None, :]
    jb = j // block
    compressed = ((jb + 1) * block + window <= i) & (jb < nb)
    see_exact = (j <= i) & ~compressed
    return torch.cat([see_principal, see_exact], dim=1)


def atp_attention(x, q, k, v, block, rank, window, method="svd"):
    """x [b, T, d]; q [b, H, T, hd]; k, v [b, KV, T, hd] (post-RoPE). Returns [b, H, T, hd]."""
    if window % block:
        raise ValueError("window must be a multiple of block")
    if rank > block:
        raise ValueError("rank must be <= block")
    b, H, T, hd = q.shape
    KV = k.shape[1]
    nb = T // block
    if nb > 0:
        xb = x[:, :nb * block].reshape(b, nb, block, x.shape[-1])
        U = block_basis(xb, rank, method).to(k.dtype)                     # [b, nb, B, r]
        kb = k[:, :, :nb * block].reshape(b, KV, nb, block, hd)
        vb = v[:, :, :nb * block].reshape(b, KV, nb, block, hd)
        kp = torch.einsum("znBr,zknBh->zknrh", U, kb).reshape(b, KV, nb * rank, hd)
        vp = torch.einsum("znBr,zknBh->zknrh", U, vb).reshape(b, KV, nb * rank, hd)
        keys, vals = torch.cat([kp, k], dim=2), torch.cat([vp, v], dim=2)
    else:
        keys, vals = k, v
    g = H // KV
    if g > 1:
        keys, vals = keys.repeat_interleave(g, dim=1), vals.repeat_interleave(g, dim=1)
    mask = atp_mask(T, block, window, rank, q.device)
    if hasattr(F, "scaled_dot_product_attention") and q.device.type == "cuda":
        return F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)
    s = (q @ keys.transpose(-1, -2)) / math.sqrt(hd)
    s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s.to(torch.promote_types(s.dtype, torch.float32)), dim=-1).to(vals.dtype) @ vals


def make_attn(block, rank, window, method="svd"):
    """An `attn` callback for model.LlamaForCausalLM.forward."""
    def attn(layer, x, q, k, v):
        return atp_attention(x, q, k, v, block, rank, window, method)
    return attn


def parse_policy(s):
    """'atp:block=32,rank=8,window=64' -> dict(block=32, rank=8, window=64); 'dense' -> None."""
    if s in (None, "", "dense"):
        return None
    name, _, args = s.partition(":")
    if name != "atp":
        raise ValueError(f"only dense and atp policies exist in PyTorch, got {s!r}")
    kv = dict(a.split("=") for a in args.split(",") if a)
    bad = set(kv) - {"block", "rank", "window"}
    if bad:
        raise ValueError(f"atp: unknown keys {sorted(bad)}; valid keys: block, rank, window")
    return {"block": int(kv.get("block", 64)), "rank": int(kv.get("rank", 16)),
            "window": int(kv.get("window", 64))}
