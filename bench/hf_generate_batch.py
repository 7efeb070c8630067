#!/usr/bin/env python3
"""Hugging Face transformers' continuous batching as a peer of `atp serve` (issue 17): the same model
directory (`atp testgen` writes the Hugging Face layout), the same random token-id prompts as
bench/serve_load.py makes (`--input-len` ids below the vocabulary size, seeded), greedy, `--output-len`
new tokens each, all `--num-prompts` handed to `model.generate_batch` at once (transformers schedules
them itself: paged KV cache, chunked prefill, continuous batching). Offline throughput, timed on the
host around the call after one untimed warm-up call: output tok/s = generated tokens / wall seconds;
there are no per-request latencies to report. Needs PyTorch and a transformers with generate_batch (the
GPU machine's); tries the paged attention implementations of `--attn` in order and says which ran.

  python3 bench/hf_generate_batch.py -m /tmp/l1b --input-len 1024 --output-len 128 --num-prompts 256 --json out.json
"""
import argparse
import json
import platform
import random
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True, help="model directory (Hugging Face layout)")
    ap.add_argument("--input-len", type=int, default=1024)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--attn", default="sdpa_paged,paged|sdpa,paged_attention,flash_paged",
                    help="attention implementations to try, in order (comma-separated)")
    ap.add_argument("--max-batch-tokens", type=int, default=2048, help="tokens per forward pass (as atp serve's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.generation import GenerationConfig

    model, impl, errors = None, None, []
    for name in args.attn.split(","):
        try:
            model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation=name, dtype=torch.bfloat16,
                                                         device_map="cuda")
            impl = name
            break
        except Exception as e:  # noqa: BLE001 (each version names its paged attention differently)
            errors.append(f"{name}: {type(e).__name__}: {str(e)[:200]}")
    if model is None:
        sys.exit("no paged attention implementation loaded:\n  " + "\n  ".join(errors))
    if not hasattr(model, "generate_batch"):
        sys.exit(f"transformers {transformers.__version__} has no generate_batch")
    model.eval()

    vocab = model.config.vocab_size
    rng = random.Random(args.seed)
    prompts = [[rng.randrange(vocab) for _ in range(args.input_len)] for _ in range(args.num_prompts)]
    # eos_token_id=None: random weights may emit the EOS id; no request stops early (ignore_eos).
    config = GenerationConfig(max_new_tokens=args.output_len, do_sample=False, eos_token_id=None, pad_token_id=0,
                              max_batch_tokens=args.max_batch_tokens)

    def generated(outputs):
        return sum(len(o.generated_tokens) for o in outputs.values())

    with torch.no_grad():
        warm = model.generate_batch([p[:64] for p in prompts[:4]], generation_config=GenerationConfig(
            max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0, max_batch_tokens=args.max_batch_tokens))
        torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = model.generate_batch(prompts, generation_config=config)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    tokens = generated(outputs)
    result = {
        "peer": "transformers.generate_batch", "transformers": transformers.__version__, "torch": torch.__version__,
        "attn_implementation": impl, "tried": errors, "gpu": torch.cuda.get_device_name(0), "host": platform.node(),
        "num_prompts": args.num_prompts, "input_len": args.input_len, "output_len": args.output_len,
        "max_batch_tokens": args.max_batch_tokens, "requests_done": len(outputs), "warmup_requests": len(warm),
        "generated_tokens": tokens, "wall_s": round(wall, 3), "output_tok_s": round(tokens / wall, 1),
        "total_tok_s": round((tokens + args.num_prompts * args.input_len) / wall, 1),
    }
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
