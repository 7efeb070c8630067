"""bench/gguf_peer.py's pure parts (no llama.cpp here): the GGUF reader and tensor comparison on files
built by the test, and the parsers of llama-bench's JSON and llama-perplexity's log."""
import importlib.util
import json
import os
import struct
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("gguf_peer", os.path.join(ROOT, "bench", "gguf_peer.py"))
P = importlib.util.module_from_spec(spec)
spec.loader.exec_module(P)


def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(tensors, align=32):
    """A GGUF v3 file: metadata (an alignment, a string array, a u32 array) and `tensors`, a list of
    (name, shape, ggml type, data bytes), laid out at aligned offsets as llama.cpp writes them."""
    kv = [s("general.alignment") + struct.pack("<II", 4, align),
          s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + s("a") + s("bc"),
          s("tokenizer.ggml.token_type") + struct.pack("<IIQ", 9, 5, 2) + struct.pack("<2i", 1, 3)]
    infos, blob = b"", b""
    for name, shape, t, data in tensors:
        blob += b"\0" * (-len(blob) % align)
        infos += s(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape) + struct.pack("<IQ", t, len(blob))
        blob += data
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv) + infos
    return head + b"\0" * (-len(head) % align) + blob


def q8_0(nblocks, seed):
    return bytes((seed * 7 + i) % 256 for i in range(34 * nblocks))


class ReadGguf(unittest.TestCase):
    def write(self, d, name, data):
        p = os.path.join(d, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def test_metadata_offsets_and_sizes(self):
        with tempfile.TemporaryDirectory() as d:
            p = self.write(d, "a.gguf", gguf([("norm", [64], 0, bytes(range(256))),
                                              ("w", [64, 3], 8, q8_0(6, 1))], align=64))
            meta, ts = P.read_gguf(p)
            self.assertEqual(meta["general.alignment"], 64)
            self.assertEqual(meta["tokenizer.ggml.tokens"], ["a", "bc"])
            self.assertEqual(meta["tokenizer.ggml.token_type"], [1, 3])
            self.assertEqual([(t["name"], t["type_name"], t["nbytes"]) for t in ts], [("norm", "F32", 256), ("w", "Q8_0", 204)])
            with open(p, "rb") as f:
                data = f.read()
            self.assertEqual(ts[0]["offset"] % 64, 0)
            self.assertEqual(data[ts[1]["offset"]:ts[1]["offset"] + 204], q8_0(6, 1))

    def test_bad_files_are_named(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaisesRegex(P.GgufError, "not a GGUF file"):
                P.read_gguf(self.write(d, "x", b"GGML" + bytes(20)))
            with self.assertRaisesRegex(P.GgufError, "not whole Q8_0 blocks"):
                P.read_gguf(self.write(d, "y", gguf([("w", [48, 2], 8, q8_0(3, 0))])))
            with self.assertRaisesRegex(P.GgufError, "past the end"):
                P.read_gguf(self.write(d, "z", gguf([("w", [64, 3], 8, q8_0(6, 0))])[:-1]))
            with self.assertRaisesRegex(P.GgufError, "ggml type 99"):
                P.read_gguf(self.write(d, "u", gguf([("w", [64], 99, b"")])))


class CompareTensors(unittest.TestCase):
    def test_verdicts(self):
        a = [("same", [64, 2], 8, q8_0(4, 1)), ("changed", [64, 2], 8, q8_0(4, 2)), ("retyped", [32], 0, bytes(128)),
             ("only_a", [32], 0, bytes(128))]
        changed = bytearray(q8_0(4, 2))
        changed[5] ^= 1
        changed[70] ^= 0x80
        b = [("retyped", [32], 1, bytes(64)), ("changed", [64, 2], 8, bytes(changed)), ("same", [64, 2], 8, q8_0(4, 1))]
        with tempfile.TemporaryDirectory() as d:
            pa, pb = os.path.join(d, "a.gguf"), os.path.join(d, "b.gguf")
            with open(pa, "wb") as f:
                f.write(gguf(a))
            with open(pb, "wb") as f:
                f.write(gguf(b, align=128))  # other offsets: tensors are matched by name
            rows = {r[0]: r[1:] for r in P.compare_tensors(pa, pb)}
        self.assertEqual(rows["same"], ("Q8_0", "Q8_0", "identical"))
        self.assertEqual(rows["changed"], ("Q8_0", "Q8_0", "differ: 2 of 136 bytes"))
        self.assertEqual(rows["retyped"], ("F32", "F16", "type differs"))
        self.assertEqual(rows["only_a"], ("F32", None, "missing in b"))


class Parsers(unittest.TestCase):
    def test_llama_bench_json(self):
        text = json.dumps([{"build_commit": "de3ff815", "n_prompt": 512, "n_gen": 0, "avg_ts": 1500.5},
                           {"build_commit": "de3ff815", "n_prompt": 0, "n_gen": 128, "avg_ts": 310.25}])
        self.assertEqual(P.parse_llama_bench(text), {"pp": 1500.5, "tg": 310.25, "commit": "de3ff815"})

    def test_llama_perplexity_log(self):
        log = "[1]20.1,[2]22.3,\nFinal estimate: PPL = 28.1234 +/- 0.51234\n"
        self.assertEqual(P.parse_llama_ppl(log), 28.1234)
        self.assertIsNone(P.parse_llama_ppl("perplexity: failed to load model"))

    def test_median_ratio(self):
        self.assertEqual(P.median_ratio([3, 1, 2], [4, 100, 1]), (2, 4, 0.5))


if __name__ == "__main__":
    unittest.main()
