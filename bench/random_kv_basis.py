"""Writes MODEL/kv_basis.safetensors with random orthonormal bases (a Gaussian matrix's Q factor) per
layer and KV head, in the layout `atp calibrate` writes (layers.L.k_basis / v_basis, F32 [kv_heads,
head_dim, head_dim]): lowrank's speed does not depend on which basis it holds, so the GPU benchmarks
of `lowrank` on a test-shape model (no tokenizer, no text to calibrate on) use these.
Usage: python3 bench/random_kv_basis.py MODEL_DIR  (layers, heads and head_dim from MODEL_DIR/config.json)"""
import json
import struct
import sys

try:  # NumPy (Debian's python3-numpy) or, on the GPU machine, PyTorch
    import numpy as np
    _rng = np.random.default_rng(0)

    def orthonormal_f32_bytes(d):
        return np.linalg.qr(_rng.standard_normal((d, d)))[0].astype('<f4').tobytes()
except ImportError:
    import torch
    _gen = torch.Generator().manual_seed(0)

    def orthonormal_f32_bytes(d):
        q = torch.linalg.qr(torch.randn(d, d, generator=_gen, dtype=torch.float64))[0].float().contiguous()
        storage = q.untyped_storage() if hasattr(q, "untyped_storage") else q.storage().untyped()  # torch < 2
        return bytes(storage)  # little-endian on the machines this runs on

model = sys.argv[1]
c = json.load(open(model + '/config.json'))
layers, heads = c['num_hidden_layers'], c.get('num_key_value_heads', c['num_attention_heads'])
d = c.get('head_dim', c['hidden_size'] // c['num_attention_heads'])
header, blobs, offset = {}, [], 0
for l in range(layers):
    for kind in ('k_basis', 'v_basis'):
        q = b''.join(orthonormal_f32_bytes(d) for _ in range(heads))
        header['layers.%d.%s' % (l, kind)] = {'dtype': 'F32', 'shape': [heads, d, d], 'data_offsets': [offset, offset + len(q)]}
        blobs.append(q)
        offset += len(q)
text = json.dumps(header).encode()
text += b' ' * (-len(text) % 8)
with open(model + '/kv_basis.safetensors', 'wb') as f:
    f.write(struct.pack('<Q', len(text)) + text + b''.join(blobs))
print('wrote %s/kv_basis.safetensors: %d layers x %d heads x %dx%d' % (model, layers, heads, d, d))
