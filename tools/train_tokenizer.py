"""Train a byte-level BPE tokenizer and write Hugging Face tokenizer.json + tokenizer_config.json.

Inputs are plain-text files (one document per file) or .jsonl files with a "text" field per line
(tools/data.py writes data_cache/train_docs.jsonl: the training documents, valid.txt removed).
Ids 0..255 are bytes, then merges, then <|begin_of_text|> <|end_of_text|> <|pad|> <|doc|>.

    /usr/bin/python3 tools/train_tokenizer.py --vocab 4096 --out /tmp/tok tools/data_cache/train_docs.jsonl
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402


def read_texts(paths):
    for p in paths:
        with open(p, encoding="utf-8") as f:
            if p.endswith(".jsonl"):
                for line in f:
                    if line.strip():
                        yield json.loads(line)["text"]
            else:
                yield f.read()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help=".txt or .jsonl files")
    ap.add_argument("--vocab", type=int, default=4096, help="total vocab size including 4 specials")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--model-max-length", type=int, default=2048)
    a = ap.parse_args()
    t0 = time.time()
    tok = bpe.train_bpe(read_texts(a.inputs), a.vocab, log=lambda s: print(s, flush=True))
    tok.save(a.out, a.model_max_length)
    print(f"vocab {len(tok)} ({len(tok.merges)} merges) -> {a.out}/tokenizer.json in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
