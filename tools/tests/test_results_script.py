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

    def test_sweep_leaves_out_columns_no_row_measured(self):
        saved = {"table": "t", "runs": {"main": run("ccc", dict(row("dense", 90.6), method="dense", budget="f32"),
                                                    dict(row("atp:block=64,rank=32,window=64", 104.67, 0.936),
                                                         method="atp", budget="32"))}}
        text = R.render_sweep("t", {}, saved)
        self.assertIn("| method | budget | policy string | perplexity | vs dense | KV bytes/token | relative to dense "
                      "| commit |", text)
        self.assertIn("| atp | 32 | `atp:block=64,rank=32,window=64` | 104.67 | +15.5% | 94 | 0.936 | `ccc` |", text)

    def test_checks_print_each_figure_beside_its_reference(self):
        table = {"runs": {"ppl": "BIN perplexity --json", "retrieval": "BIN eval --json"},
                 "rows": [{"run": "ppl", "figure": "ppl", "digits": 5, "what": "perplexity", "reference_value": "90.59511"},
                          {"run": "retrieval", "figure": "retrieval", "what": "retrieval", "reference_value": "113 / 200"}]}
        ppl = run("ddd")
        ppl["output"] = {"ppl": 90.595117, "windows": 217, "scored_tokens": 27776}
        saved = {"table": "t", "runs": {"ppl": ppl, "retrieval": run("eee", row("dense", None, correct=112, cases=200))}}
        text = R.render_checks("t", table, saved)
        self.assertIn("| perplexity | **90.59512** (217 windows, 27,776 scored tokens) | 90.59511 | `ddd` |", text)
        self.assertIn("| retrieval | **112/200** | 113 / 200 | `eee` |", text)

    def test_files_compare_with_the_first_and_state_sizes(self):
        table = {"runs": {"f16": "", "q8_0": ""}, "files": {"f16": "a.gguf", "q8_0": "b.gguf"}, "targets": {"q8_0": "0.1%"}}
        runs = {}
        for name, ppl, size in (("f16", 28.7643, 76.7e6), ("q8_0", 28.7676, 40.9e6)):
            runs[name] = run("fff")
            runs[name]["output"] = {"ppl": ppl}
            runs[name]["work_files"] = {"a.gguf": 76.7e6, "b.gguf": 40.9e6}
        text = R.render_files("t", table, {"table": "t", "runs": runs})
        self.assertIn("| f16 | 76.7 MB | 28.7643 |  |  | `fff` |", text)
        self.assertIn("| q8_0 | 40.9 MB | 28.7676 | **+0.011%** | 0.1% | `fff` |", text)

    def test_measured_tables_say_when_and_how_to_measure_again(self):
        m = {"commit": "abc1234", "date": "2026-11-23", "machine": "the VM", "load": "load average 6"}
        text = R.render_measured("speed", {"kind": "measurement", "measured": m,
                                           "runs": {"b": "BIN bench -m WORK/x --json"}}, None)
        self.assertIn("measured once at `abc1234` (2026-11-23) on the VM, load average 6", text)
        self.assertIn("`scripts/results.py run speed`", text)
        self.assertIn("build/atp bench -m WORK/x --json", text)
        text = R.render_measured("gpu", {"kind": "device", "measured": m, "runs": {"b": "OUT=out bash bench/cuda_device.sh run bench"}}, None)
        self.assertIn("GPU figures, measured once at `abc1234`", text)
        self.assertIn("OUT=out bash bench/cuda_device.sh run bench", text)

    def test_placeholders_are_replaced_whole(self):
        self.assertEqual(R.argv_of("BIN perplexity -m WORK/a.gguf -o OUT --kv lowrank:file=WORK/b", "/b/atp", "/o", "/w"),
                         ["/b/atp", "perplexity", "-m", "/w/a.gguf", "-o", "/o", "--kv", "lowrank:file=/w/b"])
        self.assertEqual(R.argv_of("BIN eval --kv BINARY", "/b/atp", "/o"), ["/b/atp", "eval", "--kv", "BINARY"])

    def test_replace_between_markers(self):
        text = "a\n<!-- results:x -->\nold\n<!-- /results:x -->\nb\n"
        self.assertEqual(R.replace_between(text, "x", "new"), "a\n<!-- results:x -->\nnew\n<!-- /results:x -->\nb\n")
        self.assertIsNone(R.replace_between(text, "y", "new"))


if __name__ == "__main__":
    unittest.main()
