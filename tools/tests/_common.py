"""Shared helpers: make tools/ importable and build a tiny data cache for training tests."""
import os
import random
import sys

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

SHARED = "/work/shared"

TEXT = ("In the beginning God created the heaven and the earth. And the earth was without form, "
        "and void; and darkness was upon the face of the deep. The jury said it did find that many "
        "of the registration and election laws are outmoded or inadequate. Only a relative handful "
        "of such reports was received, the jury said, considering the widespread interest. ") * 4


def tiny_cache(out_dir, vocab=300, seed=0):
    """Tokenizer + train_data.npz + dev_retrieval.jsonl in the layout tools/data.py writes."""
    import json
    import numpy as np
    import bpe
    import data
    tok = bpe.train_bpe([TEXT], vocab)
    tok.save(os.path.join(out_dir, "tokenizer"))
    rng = random.Random(seed)
    docs = [("t", TEXT)]
    prose = data.prose_stream(tok, docs * 8, rng)
    filler = data.Filler(docs)
    rets = [data.make_retrieval(rng, filler, ["Zed"], 300) for _ in range(20)]
    ids, off = [], [0]
    for r in rets:
        ids += [tok.bos_id] + tok.encode(r["prompt"] + " " + r["answer"] + ".")
        off.append(len(ids))
    np.savez_compressed(os.path.join(out_dir, "train_data.npz"), prose_train=prose, prose_dev=prose[:2000],
                        ret_tokens=np.array(ids, dtype=np.uint16), ret_offsets=np.array(off, dtype=np.int64))
    with open(os.path.join(out_dir, "dev_retrieval.jsonl"), "w") as f:
        for r in rets[:4]:
            f.write(json.dumps(r) + "\n")
    return tok
