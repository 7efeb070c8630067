"""PyTorch's scaled_dot_product_attention on the shapes bench/cuda_attn.cpp times (llama-3.2-1b:
32 query heads, 8 KV heads, head_dim 64, bf16), the reference for the attention kernels alone.
Decode reads 16 layers' caches in turn (no layer stays in L2); prefill is causal from position 0.
Prints one JSON object per line."""
import json

import torch
import torch.nn.functional as F

LAYERS, HEADS, KV, HD = 16, 32, 8, 64


def time_ms(fn, reps):
    """Median of `reps` event-timed runs after two warm-ups."""
    times = []
    for r in range(reps + 2):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        if r >= 2:
            times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def main():
    dev = torch.device("cuda")
    for L in (1024, 8192, 32768):
        ks = [torch.randn(1, KV, L, HD, device=dev, dtype=torch.bfloat16) for _ in range(LAYERS)]
        vs = [torch.randn(1, KV, L, HD, device=dev, dtype=torch.bfloat16) for _ in range(LAYERS)]
        q1 = torch.randn(1, HEADS, 1, HD, device=dev, dtype=torch.bfloat16)

        def decode():
            for k, v in zip(ks, vs):
                F.scaled_dot_product_attention(q1, k, v, enable_gqa=True)

        dec = time_ms(decode, 20) / LAYERS
        kv_bytes = 2 * L * KV * HD * 2
        print(json.dumps({"what": "sdpa_decode", "kv": "bf16", "context": L, "us_per_layer": round(dec * 1e3, 2),
                          "kv_bytes_per_layer": kv_bytes, "gb_s": round(kv_bytes / dec / 1e6, 1)}), flush=True)
        q = torch.randn(1, HEADS, L, HD, device=dev, dtype=torch.bfloat16)
        pre = time_ms(lambda: F.scaled_dot_product_attention(q, ks[0], vs[0], is_causal=True, enable_gqa=True), 3)
        flop = 4.0 * HD * HEADS * (L * (L + 1) / 2)
        print(json.dumps({"what": "sdpa_prefill", "kv": "bf16", "context": L, "ms_per_layer": round(pre, 3),
                          "tflop_s": round(flop / pre / 1e9, 2)}), flush=True)
        del ks, vs, q
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
