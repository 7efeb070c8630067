"""scripts/check_layers.py on small trees written to a temporary folder, and on the checkout's src/."""
import contextlib
import importlib.util
import io
import os
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("check_layers", os.path.join(ROOT, "scripts", "check_layers.py"))
L = importlib.util.module_from_spec(spec)
spec.loader.exec_module(L)


class CheckLayers(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.src = os.path.join(self.tmp.name, "src")
        # A tree that obeys the table: down a level, within a folder, beside the file, a system header.
        self.write("core/status.h", "#pragma once\n#include <string>\n")
        self.write("format/safetensors.h", '#include "core/status.h"\n')
        self.write("kv/lowrank_policy.cpp", '#include "kv/lowrank_policy.h"\n#include "format/safetensors.h"\n')
        self.write("model/llama.h", '#include "kv/kv_policy.h"\n#include "local.inc"\n')

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, rel, text):
        path = os.path.join(self.src, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def run_main(self):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            rc = L.main(["--src", self.src])
        return rc, out.getvalue()

    def test_a_tree_that_goes_down_passes(self):
        rc, out = self.run_main()
        self.assertEqual(rc, 0, out)
        self.assertIn("4 files, 4 includes", out)

    def test_an_include_of_a_higher_folder_fails_naming_file_and_line(self):
        # The cycle this check was written against: kv reading basis files through model/.
        self.write("kv/lowrank_policy.cpp", '#include "kv/lowrank_policy.h"\n  #  include "model/safetensors.h"\n')
        rc, out = self.run_main()
        self.assertEqual(rc, 1)
        self.assertIn("kv/lowrank_policy.cpp:2: kv includes model/safetensors.h: model (level 3) is above kv (level 2)", out)

    def test_peers_include_neither_each_other(self):
        self.write("format/gguf.cpp", '#include "tokenizer/tokenizer.h"\n')
        rc, out = self.run_main()
        self.assertEqual(rc, 1)
        self.assertIn("format/gguf.cpp:1: format includes tokenizer/tokenizer.h: format and tokenizer are peers", out)

    def test_a_folder_without_a_level_fails(self):
        self.write("store/pages.h", '#include "core/status.h"\n')
        rc, out = self.run_main()
        self.assertEqual(rc, 1)
        self.assertIn("folder 'store' has no level", out)

    def test_an_include_of_a_folder_without_a_level_fails(self):
        self.write("kv/page.h", '#include "store/pages.h"\n')
        rc, out = self.run_main()
        self.assertEqual(rc, 1)
        self.assertIn("kv/page.h:1: kv includes store/pages.h: 'store' is not a folder with a level", out)

    def test_commented_out_includes_are_not_includes(self):
        self.write("core/dtype.h", '// #include "model/llama.h"\n')
        self.assertEqual(self.run_main()[0], 0)

    def test_the_checkout_obeys_the_table(self):
        violations, files, includes = L.check(os.path.join(ROOT, "src"))
        self.assertEqual(violations, [])
        self.assertGreater(files, 100)
        self.assertGreater(includes, 300)


if __name__ == "__main__":
    unittest.main()
