"""Small Llama-architecture model with Hugging Face `LlamaForCausalLM` tensor names, plus
checkpoint I/O in HF layout (config.json, model.safetensors, tokenizer files).

RMSNorm, RoPE in HF's rotate_half layout, grouped-query attention, SwiGLU MLP, optional tied
embeddings, no biases. Attention is pluggable: `forward(ids, attn=fn)` calls
fn(layer_index, x_norm, q, k, v) with q [b, H, T, hd] and post-RoPE k, v [b, KV, T, hd], and
x_norm [b, T, d] the layer input after the input RMSNorm (what an ATP policy needs).
"""
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from . import safetensors_io as st  # type: ignore
except ImportError:
    import safetensors_io as st


@dataclass
class Config:
    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    bos_token_id: int = 4092
    eos_token_id: int = 4093
    dropout: float = 0.0  # training only; not written to config.json

    def hf_dict(self, torch_dtype="float32"):
        d = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
        d.update({k: v for k, v in asdict(self).items() if k != "dropout"})
        d.update({"hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
                  "torch_dtype": torch_dtype})
        return d

    @classmethod
    def from_hf(cls, d):
        fields = cls.__dataclass_fields__
        c = cls(**{k: v for k, v in d.items() if k in fields})
        if "head_dim" not in d:
            c.head_dim = c.hidden_size // c.num_attention_heads
        return c


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_cos_sin(T, hd, theta, device, offset=0):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
    t = torch.arange(offset, offset + T, device=device, dtype=torch.float32)
    f = torch.outer(t, inv)
    emb = torch.cat([f, f], dim=-1)  # HF layout: the two halves share frequencies
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


def dense_attention(layer, x, q, k, v):
    """Causal softmax attention with GQA (query head h uses KV head h // (H / KV))."""
    g = q.shape[1] // k.shape[1]
    if g > 1:
        k = k.repeat_interleave(g, dim=1)
        v = v.repeat_interleave(g, dim=1)
    if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0 (flash kernels on GPU)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    T = q.shape[2]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s.to(torch.promote_types(s.dtype, torch.float32)), dim=-1).to(v.dtype) @ v


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        H, KV, hd, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.hidden_size
        self.q_proj = nn.Linear(d, H * hd, bias=False)
        self.k_proj = nn.Linear(d, KV * hd, bias=False)
        self.v_proj = nn.Linear(d, KV * hd, bias=False)
        self.o_proj = nn.Linear(H * hd, d, bias=False)

    def forward(self, layer, x, cos, sin, attn):
        b, T, _ = x.shape
        c = self.c
        q = self.q_proj(x).view(b, T, c.num_attention_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, T, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, T, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o = attn(layer, x, q, k, v)
        return self.o_proj(o.transpose(1, 2).reshape(b, T, -1))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, layer, h, cos, sin, attn):
        h = h + self.drop(self.self_attn(layer, self.input_layernorm(h), cos, sin, attn))
        return h + self.drop(self.mlp(self.post_attention_layernorm(h)))


class Inner(nn.Module):
    """Holds the `model.*` tensors so state_dict names match HF's LlamaForCausalLM."""

    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([Block(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.model = Inner(c)
        if not c.tie_word_embeddings:
            self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.apply(self._init)
        # GPT-2 style: scale residual-output projections down with depth
        for n, p in self.named_parameters():
            if n.endswith("o_proj.weight") or n.endswith("down_proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * c.num_hidden_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids, attn=None):
        c = self.config
        attn = attn or dense_attention
        T = ids.shape[1]
        cos, sin = rope_cos_sin(T, c.head_dim, c.rope_theta, ids.device)
        h = self.model.embed_tokens(ids)
        for i, blk in enumerate(self.model.layers):
            h = blk(i, h, cos, sin, attn)
        h = self.model.norm(h)
        w = self.model.embed_tokens.weight if c.tie_word_embeddings else self.lm_head.weight
        return F.linear(h, w)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(model, out_dir, dtype="bf16", tokenizer_dir=None, extra_config=None):
    """HF layout: config.json, model.safetensors (F32 or BF16), tokenizer files copied over."""
    os.makedirs(out_dir, exist_ok=True)
    tdt = {"bf16": torch.bfloat16, "f32": torch.float32, "f16": torch.float16}[dtype]
    sd = {k: v.detach().to("cpu", tdt).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    st.save_file(sd, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config.hf_dict({"bf16": "bfloat16", "f32": "float32", "f16": "float16"}[dtype])
    if extra_config:
        cfg.update(extra_config)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    if tokenizer_dir:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            src = os.path.join(tokenizer_dir, name)
            if os.path.exists(src) and os.path.abspath(src) != os.path.abspath(os.path.join(out_dir, name)):
                shutil.copy(src, os.path.join(out_dir, name))


def load_checkpoint(path, device="cpu", dtype=torch.float32):
    with open(os.path.join(path, "config.json")) as f:
        c = Config.from_hf(json.load(f))
    m = LlamaForCausalLM(c)
    sd, _ = st.load_file(os.path.join(path, "model.safetensors"))
    missing, unexpected = m.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and c.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"{path}: missing {missing}, unexpected {unexpected}")
    return m.to(device=device, dtype=dtype)
