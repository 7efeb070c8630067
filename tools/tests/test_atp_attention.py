"""ATP attention (docs/docs/design.md section 4) against dense attention and a per-query reference."""
import math
import os
import unittest

import torch

from tools.tests._common import TOOLS
import atp_attention as A
import model as M
import safetensors_io as st

REF = os.path.join(os.path.dirname(TOOLS), "tests/data/atp_reference.safetensors")


def inputs(T=70, d=24, H=4, KV=2, hd=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, T, d, generator=g, dtype=torch.float64)
    q = torch.randn(1, H, T, hd, generator=g, dtype=torch.float64)
    k = torch.randn(1, KV, T, hd, generator=g, dtype=torch.float64)
    v = torch.randn(1, KV, T, hd, generator=g, dtype=torch.float64)
    return x, q, k, v


def naive(x, q, k, v, B, r, W):
    """Query by query, head by head, straight from the definition."""
    _, H, T, hd = q.shape
    KV = k.shape[1]
    out = torch.zeros_like(q)
    for i in range(T):
        for h in range(H):
            kv = h // (H // KV)
            keys, vals = [], []
            for b in range(T // B):
                if (b + 1) * B + W <= i:
                    U = torch.linalg.svd(x[0, b * B:(b + 1) * B], full_matrices=False)[0][:, :r]
                    U = U * torch.where(U.sum(0) >= 0, 1.0, -1.0)
                    keys.append(U.T @ k[0, kv, b * B:(b + 1) * B])
                    vals.append(U.T @ v[0, kv, b * B:(b + 1) * B])
            for j in range(i + 1):
                b = j // B
                if not (b < T // B and (b + 1) * B + W <= i):
                    keys.append(k[0, kv, j:j + 1])
                    vals.append(v[0, kv, j:j + 1])
            K, V = torch.cat(keys), torch.cat(vals)
            a = torch.softmax(K @ q[0, h, i] / math.sqrt(hd), dim=0)
            out[0, h, i] = a @ V
    return out


class AtpTest(unittest.TestCase):
    def test_equals_dense_when_nothing_compressed(self):
        x, q, k, v = inputs()
        dense = M.dense_attention(0, x, q, k, v)
        atp = A.atp_attention(x, q, k, v, block=16, rank=4, window=64)  # (b+1)*16+64 > 69 for all b
        self.assertTrue(torch.allclose(atp, dense, atol=1e-10))
        # and with compression, queries before the first compressed block still match dense
        atp2 = A.atp_attention(x, q, k, v, block=16, rank=4, window=16)
        self.assertTrue(torch.allclose(atp2[:, :, :32], dense[:, :, :32], atol=1e-10))
        self.assertFalse(torch.allclose(atp2[:, :, 32:], dense[:, :, 32:], atol=1e-3))

    def test_matches_definition(self):
        x, q, k, v = inputs(T=45)
        for B, r, W in [(8, 2, 0), (8, 4, 8), (16, 3, 16)]:
            got = A.atp_attention(x, q, k, v, B, r, W)
            self.assertTrue(torch.allclose(got, naive(x, q, k, v, B, r, W), atol=1e-9), (B, r, W))

    def test_causal(self):
        x, q, k, v = inputs()
        base = A.atp_attention(x, q, k, v, 8, 2, 8)
        for t in (5, 23, 40, 64):
            g = torch.Generator().manual_seed(t)
            x2, q2, k2, v2 = (z.clone() for z in (x, q, k, v))
            for z in (x2, q2, k2, v2):  # change everything after position t
                z[..., t + 1:, :] += torch.randn(z[..., t + 1:, :].shape, generator=g, dtype=z.dtype)
            out = A.atp_attention(x2, q2, k2, v2, 8, 2, 8)
            self.assertTrue(torch.allclose(out[:, :, :t + 1], base[:, :, :t + 1], atol=1e-10), t)

    def test_basis_sign_and_eigh(self):
        x = inputs()[0][0, :64].reshape(2, 32, 24)
        U = A.block_basis(x, 6, "svd")
        self.assertTrue((U.sum(-2) >= 0).all())
        self.assertTrue(torch.allclose(U.transpose(-1, -2) @ U, torch.eye(6, dtype=U.dtype).expand(2, 6, 6)))
        self.assertTrue(torch.allclose(A.block_basis(x, 6, "eigh"), U, atol=1e-8))

    def test_gradients_reach_projections_not_basis(self):
        x, q, k, v = (z.float().requires_grad_() for z in inputs())
        A.atp_attention(x, q, k, v, 8, 2, 8).sum().backward()
        self.assertIsNone(x.grad)  # U is a constant
        self.assertGreater(k.grad.abs().sum().item(), 0)
        self.assertGreater(v.grad.abs().sum().item(), 0)

    def test_policy_string(self):
        self.assertEqual(A.parse_policy("atp:block=32,rank=8,window=64"), {"block": 32, "rank": 8, "window": 64})
        self.assertIsNone(A.parse_policy("dense"))
        with self.assertRaises(ValueError):
            A.parse_policy("atp:blk=3")

    @unittest.skipUnless(os.path.exists(REF), "tests/data/atp_reference.safetensors not generated")
    def test_reference_file_is_current(self):
        t, _ = st.load_file(REF)
        T = t["X"].shape[0]
        x = t["X"].double()[None]
        q = t["Q"].double().view(T, 4, 16).transpose(0, 1)[None]
        k = t["K"].double().view(T, 2, 16).transpose(0, 1)[None]
        v = t["V"].double().view(T, 2, 16).transpose(0, 1)[None]
        for name, (B, r, W) in {"O_b32_r8_w32": (32, 8, 32), "O_b16_r4_w0": (16, 4, 0)}.items():
            o = A.atp_attention(x, q, k, v, B, r, W)[0].transpose(0, 1).reshape(T, -1)
            self.assertLess((o.float() - t[name]).abs().max().item(), 1e-5, name)


if __name__ == "__main__":
    unittest.main()
