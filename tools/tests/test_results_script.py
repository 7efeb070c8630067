"""scripts/results.py: the comparison `check` makes and the table text `render` writes, on synthetic runs."""
import importlib.util
import os
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("results", os.path.join(ROOT, "scripts", "results.py"))
R = importlib.util.module_from_spec(spec)
spec.loader.exec_module(R)


def row(policy, ppl, ratio=1.0, correct=None, cases=None):
    return {"policy": policy, "ppl": ppl, "kv_ratio": ratio, "kv_bytes_per_token": 100.0 * ratio,
            "correct": correct, "cases": cases, "windows": 4, "scored_tokens": 512}


def run(commit, *rows):
    return {"command": "BIN eval --json", "commit": commit, "date": "2026-12-06 07:00 UTC", "wall_s": 1.0,
            "output": {"machine": "m", "threads": 2, "results": list(rows)}}


class Compare(unittest.TestCase):
    def test_summation_order_noise_passes(self):
        self.assertEqual(R.compare("w", row("dense", 91.8690890952256), row("dense", 91.86908980435221)), [])

    def test_a_changed_figure_is_named(self):
        errors = R.compare("table t, run 512, policy p:", row("p", 34.51, 0.199), row("p", 34.02, 0.199))
        self.assertEqual(len(errors), 1)
        self.assertIn("policy p: field ppl: committed 34.51, got 34.02", errors[0])
        errors = R.compare("w", row("p", 34.51, correct=30, cases=32), row("p", 34.51, correct=29, cases=32))
        self.assertEqual(errors, ["w field correct: committed 30, got 29"])

    def test_bytes_must_match_exactly(self):
        self.assertEqual(len(R.compare("w", row("p", 1.0, 0.5), row("p", 1.0, 0.5000001))), 1)

    def test_null_fields_are_not_compared(self):
        self.assertEqual(R.compare("w", row("p", 2.0, correct=3, cases=4), row("p", 2.0)), [])


class Render(unittest.TestCase):
    def test_lengths_rows_name_their_commits_and_missing_runs(self):
        table = {"policies": ["dense", "snapkv:budget=256"]}
        saved = {"table": "t", "runs": {
            "512": run("aaa", row("dense", 30.0, 1.0, 30, 32), row("snapkv:budget=256", 30.3, 0.755, 29, 32)),
            "1024": run("bbb", row("dense", 25.0), row("snapkv:budget=256", 26.0, 0.377)),
        }}
        text = R.render_lengths("t", table, saved)
        self.assertIn("| `dense` | 30.00 (+0.0%) | 25.00 (+0.0%) | - | 1.000 / 1.000 / - | 30/32 | - | `aaa`, `bbb` |", text)
        self.assertIn("| `snapkv:budget=256` | 30.30 (+1.0%) | 26.00 (+4.0%) | - | 0.755 / 0.377 / - | 29/32 | - |", text)

    def test_replace_between_markers(self):
        text = "a\n<!-- results:x -->\nold\n<!-- /results:x -->\nb\n"
        self.assertEqual(R.replace_between(text, "x", "new"), "a\n<!-- results:x -->\nnew\n<!-- /results:x -->\nb\n")
        self.assertIsNone(R.replace_between(text, "y", "new"))


if __name__ == "__main__":
    unittest.main()
