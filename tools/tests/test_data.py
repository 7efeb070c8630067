"""Corpus building: the held-out filter of the extra sources and the compact (xz) data cache."""
import io
import lzma
import os
import tempfile
import unittest

import numpy as np

from tools.tests._common import TEXT
import data
import train

VALID_LINE = ("The jury further said in term end presentments that the City Executive Committee, "
              "which had over all charge of the election, deserves the praise of the city.")


class ExtraSourcesTest(unittest.TestCase):
    def test_paragraph_sharing_a_12_word_span_with_valid_is_dropped(self):
        quoting = "As the paper put it: the City Executive Committee, which had over all charge of the election, did well."
        short = "the City Executive Committee, which had over all"  # 9 words: too short to count
        fake = [("fake", "\n".join(["An unrelated paragraph about Perl.", quoting, short]))]
        with tempfile.TemporaryDirectory() as d:
            valid = os.path.join(d, "valid.txt")
            with open(valid, "w") as f:
                f.write(VALID_LINE + "\n\n" + TEXT + "\n")
            saved = dict(data.EXTRA_SOURCES)
            data.EXTRA_SOURCES["fake"] = ("none", lambda: list(fake))
            try:
                docs, stats = data.load_extra(["fake"], valid_path=valid, log=lambda *_: None)
            finally:
                data.EXTRA_SOURCES.clear()
                data.EXTRA_SOURCES.update(saved)
        self.assertEqual(docs, [("fake", "An unrelated paragraph about Perl.\n" + short)])
        self.assertEqual(stats["fake"]["paragraphs_dropped"], 1)

    def test_reflow_joins_wrapped_prose_and_keeps_indented_blocks(self):
        self.assertEqual(data.reflow("one two\nthree"), "one two three")
        self.assertEqual(data.reflow("code:\n    x = 1"), "code:\n    x = 1")


class XzCacheTest(unittest.TestCase):
    def test_load_data_reads_the_xz_form(self):
        arrays = {"prose_train": np.arange(1000, dtype=np.uint16), "ret_offsets": np.array([0, 5], dtype=np.int64)}
        with tempfile.TemporaryDirectory() as d:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            with lzma.open(os.path.join(d, "train_data.npz.xz"), "wb") as f:
                f.write(buf.getvalue())
            got = train.load_data(d)
            for k, v in arrays.items():
                np.testing.assert_array_equal(got[k], v)


if __name__ == "__main__":
    unittest.main()
