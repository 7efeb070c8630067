"""Byte-level BPE trainer/encoder: round trip, tokenizer.json structure, agreement with ref-5m."""
import json
import os
import tempfile
import unittest

from tools.tests._common import SHARED, TEXT
import bpe

REF = os.path.join(SHARED, "models/ref-5m")


class TokenizerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tok = bpe.train_bpe([TEXT, "Numbers 12345 and 678; tabs\tand  spaces.\n\nNew paragraph!"], 330)

    def test_vocab_layout(self):
        t = self.tok
        self.assertEqual(len(t), 330)
        self.assertEqual([t.vocab[bpe.BYTE_ENC[b]] for b in range(256)], list(range(256)))
        self.assertEqual(t.bos_id, 326)  # specials come last, in the ref-5m order
        self.assertEqual(t.specials["<|doc|>"], 329)

    def test_round_trip(self):
        for s in ["", "Hello world", "  leading and trailing  ", "tabs\t\tnew\n\nlines\r\n",
                  "naïve café — “quotes” 😀 中文 ½ ²", "don't we'll I'M", "x<|doc|>y <|end_of_text|>",
                  "1234567890 3.14159", TEXT]:
            ids = self.tok.encode(s)
            self.assertEqual(self.tok.decode(ids), s)
        ids = self.tok.encode("a<|begin_of_text|>b")
        self.assertIn(self.tok.bos_id, ids)  # special strings map to their ids, as in HF

    def test_compresses(self):
        self.assertLess(len(self.tok.encode(TEXT)), len(TEXT.encode()) / 2)

    def test_save_load(self):
        with tempfile.TemporaryDirectory() as d:
            self.tok.save(d)
            t2 = bpe.Tokenizer.from_file(d)
            self.assertEqual(t2.encode(TEXT, add_bos=True), self.tok.encode(TEXT, add_bos=True))
            with open(os.path.join(d, "tokenizer.json")) as f:
                j = json.load(f)
            self.assertEqual(j["pre_tokenizer"]["type"], "ByteLevel")
            self.assertEqual(j["decoder"]["type"], "ByteLevel")
            self.assertEqual(j["post_processor"]["type"], "TemplateProcessing")
            self.assertEqual([t["content"] for t in j["added_tokens"]], bpe.SPECIALS)
            with open(os.path.join(d, "tokenizer_config.json")) as f:
                cfg = json.load(f)
            self.assertEqual(cfg["bos_token"], "<|begin_of_text|>")

    @unittest.skipUnless(os.path.isdir(REF), "needs /work/shared/models/ref-5m")
    def test_same_structure_as_ref5m(self):
        with open(os.path.join(REF, "tokenizer.json")) as f:
            ref = json.load(f)
        ours = self.tok.to_json()

        def shape(j):  # everything except the learned vocab/merges and the special ids
            if isinstance(j, dict):
                return {k: shape(v) for k, v in j.items() if k not in ("vocab", "merges", "id", "ids")}
            if isinstance(j, list):
                return [shape(v) for v in j]
            return j
        self.assertEqual(shape(ours), shape(ref))
        self.assertEqual(list(ours.keys()), list(ref.keys()))

    @unittest.skipUnless(os.path.isdir(REF), "needs /work/shared/models/ref-5m")
    def test_encoder_matches_ref5m_ids(self):
        t = bpe.Tokenizer.from_file(REF)
        with open(os.path.join(REF, "reference/tokenizer_cases.json")) as f:
            cases = json.load(f)
        for c in cases:
            self.assertEqual(t.encode(c["text"]), c["ids"], c["text"])


if __name__ == "__main__":
    unittest.main()
