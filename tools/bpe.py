"""Byte-level BPE (GPT-2 style): pre-tokenizer, trainer, encoder/decoder, tokenizer.json I/O.

The saved tokenizer.json mirrors /work/shared/models/ref-5m/tokenizer.json field for field
(ByteLevel pre-tokenizer with the GPT-2 regex, ByteLevel decoder, TemplateProcessing that
prepends <|begin_of_text|>), so the engine's tokenizer and Hugging Face read it unchanged.
Ids 0..255 are the bytes (id == byte value), merges follow in training order, specials last.
"""
import heapq
import json
import os
import re
import sys
import unicodedata
from collections import Counter, defaultdict

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|pad|>", "<|doc|>"]


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode char map (space -> 'Ġ', newline -> 'Ċ')."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_ENC = bytes_to_unicode()
BYTE_DEC = {c: b for b, c in BYTE_ENC.items()}


def _class_of(pred):
    """Regex character class body listing every code point where pred(category) holds.
    Python's `re` lacks \\p{L}/\\p{N}; building the ranges from unicodedata keeps the GPT-2
    regex exact instead of approximating letters with [^\\W\\d_]."""
    ranges, start, prev = [], None, None
    for cp in range(0x110000):
        if pred(unicodedata.category(chr(cp))):
            if start is None:
                start = cp
            prev = cp
        elif start is not None:
            ranges.append((start, prev))
            start = None
    if start is not None:
        ranges.append((start, prev))
    esc = lambda c: re.escape(chr(c))
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


_L = _class_of(lambda c: c.startswith("L"))
_N = _class_of(lambda c: c.startswith("N"))
# Unicode White_Space (what Oniguruma's \s matches); Python's \s also takes \x1c-\x1f.
_S = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
GPT2_PATTERN = re.compile(
    rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[{_L}]+| ?[{_N}]+| ?[^{_S}{_L}{_N}]+|[{_S}]+(?![^{_S}])|[{_S}]+""")


def pretokenize(text):
    """GPT-2 regex split, each piece mapped to its byte-level unicode string."""
    return ["".join(BYTE_ENC[b] for b in m.encode("utf-8")) for m in GPT2_PATTERN.findall(text)]


def train_bpe(texts, vocab_size, specials=SPECIALS, log=None):
    """Learn vocab_size - 256 - len(specials) merges from an iterable of strings.
    Classic incremental BPE: pair counts weighted by word frequency, a lazy max-heap,
    and an index pair -> words so each merge only touches the words that contain it."""
    n_merges = vocab_size - 256 - len(specials)
    if n_merges < 0:
        raise ValueError("vocab_size too small for 256 bytes + specials")
    wc = Counter()
    for t in texts:
        wc.update(pretokenize(t))
    words = [list(w) for w in wc]
    freqs = [wc[w] for w in wc]
    pair_count = defaultdict(int)
    where = defaultdict(set)
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pair_count[(a, b)] += freqs[i]
            where[(a, b)].add(i)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < n_merges and heap:
        negc, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or -negc <= 0:
            continue  # stale heap entry
        if -negc < 2:
            break  # merging singletons only memorises the corpus
        merges.append(pair)
        a, b = pair
        new = a + b
        touched = set()
        for i in list(where[pair]):
            w = freqs[i]
            sym = words[i]
            for p in zip(sym, sym[1:]):
                pair_count[p] -= w
                touched.add(p)
            out, j = [], 0
            while j < len(sym):
                if j + 1 < len(sym) and sym[j] == a and sym[j + 1] == b:
                    out.append(new)
                    j += 2
                else:
                    out.append(sym[j])
                    j += 1
            for p in zip(sym, sym[1:]):
                where[p].discard(i)
            words[i] = out
            for p in zip(out, out[1:]):
                pair_count[p] += w
                where[p].add(i)
                touched.add(p)
        for p in touched:
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], p))
            else:
                pair_count.pop(p, None)
        if log and len(merges) % 500 == 0:
            log(f"  {len(merges)} merges, last {a!r}+{b!r} count {-negc}")
    vocab = {BYTE_ENC[b]: b for b in range(256)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    return Tokenizer(vocab, merges, specials)


class Tokenizer:
    def __init__(self, vocab, merges, specials=SPECIALS):
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.specials = {}
        for s in specials:
            if s not in self.vocab:
                self.vocab[s] = len(self.vocab)
            self.specials[s] = self.vocab[s]
        self.inv = {i: s for s, i in self.vocab.items()}
        self._cache = {}
        self._special_re = re.compile("(" + "|".join(re.escape(s) for s in self.specials) + ")") \
            if self.specials else None

    @property
    def bos_id(self):
        return self.specials["<|begin_of_text|>"]

    @property
    def eos_id(self):
        return self.specials["<|end_of_text|>"]

    def __len__(self):
        return len(self.vocab)

    def _bpe(self, piece):
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        sym = list(piece)
        while len(sym) > 1:
            # lowest-rank adjacent pair; merging all its occurrences left to right
            # gives the same result as Hugging Face's BPE model
            best = min(((self.ranks.get(p, 1 << 30), p) for p in zip(sym, sym[1:])))
            if best[0] == 1 << 30:
                break
            a, b = best[1]
            out, j = [], 0
            while j < len(sym):
                if j + 1 < len(sym) and sym[j] == a and sym[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(sym[j])
                    j += 1
            sym = out
        ids = [self.vocab[s] for s in sym]
        if len(self._cache) < 500000:
            self._cache[piece] = ids
        return ids

    def encode(self, text, add_bos=False):
        """Token ids for `text`; special-token strings in the text map to their ids (as in HF)."""
        out = [self.bos_id] if add_bos else []
        parts = self._special_re.split(text) if self._special_re else [text]
        for part in parts:
            if part in self.specials:
                out.append(self.specials[part])
            elif part:
                for piece in pretokenize(part):
                    out.extend(self._bpe(piece))
        return out

    def decode(self, ids, skip_special=False):
        out, buf = [], bytearray()
        for i in ids:
            s = self.inv[int(i)]
            if s in self.specials:
                if not skip_special:
                    out.append(buf.decode("utf-8", errors="replace") + s)
                    buf = bytearray()
                continue
            buf.extend(BYTE_DEC[c] for c in s)
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    # ---- Hugging Face files ----
    def to_json(self):
        bos = "<|begin_of_text|>"
        added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True} for s, i in self.specials.items()]
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                      "use_regex": True}
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": byte_level,
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos, "type_id": 1}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [self.bos_id], "tokens": [bos]}},
            },
            "decoder": dict(byte_level, add_prefix_space=True),
            "model": {
                "type": "BPE", "dropout": None, "unk_token": None,
                "continuing_subword_prefix": None, "end_of_word_suffix": None,
                "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                "vocab": {s: i for s, i in self.vocab.items() if s not in self.specials},
                "merges": [f"{a} {b}" for a, b in self.merges],
            },
        }

    def save(self, out_dir, model_max_length=2048):
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=1, ensure_ascii=False)
        cfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
               "pad_token": "<|pad|>", "add_bos_token": True,
               "model_max_length": model_max_length, "tokenizer_class": "PreTrainedTokenizerFast"}
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
            json.dump(cfg, f, indent=1)

    @classmethod
    def from_file(cls, path):
        if os.path.isdir(path):
            path = os.path.join(path, "tokenizer.json")
        with open(path, encoding="utf-8") as f:
            j = json.load(f)
        m = j["model"]
        merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
        vocab = dict(m["vocab"])
        specials = []
        for t in sorted(j.get("added_tokens", []), key=lambda t: t["id"]):
            vocab[t["content"]] = t["id"]
            specials.append(t["content"])
        return cls(vocab, merges, specials)


if __name__ == "__main__":
    tok = Tokenizer.from_file(sys.argv[1])
    print(tok.encode(" ".join(sys.argv[2:]), add_bos=True))
