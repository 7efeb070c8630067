"""Distillation loss of finetune_atp.py (--distill, --dense-rows) on a tiny model, and the CLI end to end."""
import copy
import json
import os
import sys
import tempfile
import unittest
from unittest import mock

import torch

from tools.tests._common import tiny_cache
from tools.tests.test_model_train import TINY
import atp_attention as A
import finetune_atp as FT
import model as M
import train

NO_AUTOCAST = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731  (train.py's CPU autocast)
ATP = A.make_attn(block=4, rank=1, window=4)  # T = 32: queries from 8 on see compressed blocks


class DistillLossTest(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.teacher = M.LlamaForCausalLM(TINY)
        with torch.no_grad():  # weights larger than at init: sharp attention, which ATP visibly changes
            for p in self.teacher.parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 0.3)
        self.student = copy.deepcopy(self.teacher)
        self.x = torch.randint(0, TINY.vocab_size, (4, 33))

    def test_zero_for_same_logits_positive_otherwise(self):
        t = torch.randn(2, 5, 11)
        y = torch.randint(0, 11, (2, 5))
        self.assertEqual(FT.kl_teacher_student(t, t).item(), 0.0)
        s = t + 0.3 * torch.randn(2, 5, 11)
        self.assertGreater(FT.kl_teacher_student(s, t).item(), 1e-3)
        # (1 - W) CE + W KL: W = 0 is the cross-entropy alone, W = 1 the KL alone
        l0, ce, kl = FT.distill_loss(s, t, y, 0.0)
        l1, _, _ = FT.distill_loss(s, t, y, 1.0)
        self.assertAlmostEqual(l0.item(), ce.item(), places=6)
        self.assertAlmostEqual(l1.item(), kl.item(), places=6)

    def test_dense_row_index(self):
        self.assertEqual(FT.dense_row_index(16, 0.25), [2, 6, 10, 14])
        self.assertEqual(FT.dense_row_index(4, 0.0), [])
        self.assertEqual(FT.dense_row_index(4, 0.5), [1, 3])

    def test_step_zero_when_student_is_teacher_dense(self):
        step = FT.make_distill_step(self.teacher, 1.0, 0.5)
        student = self.student.eval()
        x, y = self.x[:, :-1], self.x[:, 1:]
        loss, parts = step(student, x, y, None, NO_AUTOCAST)  # both halves dense: same function
        self.assertLess(loss.item(), 1e-6)
        loss, parts = step(student, x, y, ATP, NO_AUTOCAST)  # ATP rows differ from the teacher
        self.assertLess(parts["kl_dense"].item(), 1e-6)
        self.assertGreater(parts["kl_atp"].item(), 1e-3)
        self.assertAlmostEqual(loss.item(), 0.5 * parts["kl_atp"].item() + 0.5 * parts["kl_dense"].item(), places=5)

    def test_few_steps_lower_the_atp_kl(self):
        step = FT.make_distill_step(self.teacher, 0.9, 0.25)
        student = self.student.train()
        x, y = self.x[:, :-1], self.x[:, 1:]
        opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
        kls = []
        for _ in range(12):
            loss, parts = step(student, x, y, ATP, NO_AUTOCAST)
            opt.zero_grad()
            loss.backward()
            opt.step()
            kls.append(parts["kl_atp"].item())
        self.assertLess(kls[-1], 0.7 * kls[0])
        self.assertTrue(all(p.grad is None for p in self.teacher.parameters()))


class DistillCliTest(unittest.TestCase):
    def test_cli_writes_checkpoint_and_summary(self):
        with tempfile.TemporaryDirectory() as d:
            tiny_cache(d)
            base, out = os.path.join(d, "base"), os.path.join(d, "ft")
            train.train(train.build_parser().parse_args(
                ["--data", d, "--out", base, "--layers", "2", "--d-model", "32", "--heads", "4",
                 "--kv-heads", "2", "--head-dim", "8", "--ffn", "64", "--ctx", "64", "--batch", "4",
                 "--steps", "2", "--eval-every", "2", "--dtype", "f32"]))
            argv = ["finetune_atp.py", "--init", base, "--data", d, "--out", out, "--ctx", "64", "--batch", "4",
                    "--kv", "atp:block=8,rank=2,window=16", "--steps", "3", "--eval-every", "3",
                    "--distill", "0.9", "--dense-rows", "0.25"]
            with mock.patch.object(sys, "argv", argv):
                FT.main()
            with open(os.path.join(out, "atp_finetune.json")) as f:
                info = json.load(f)
            self.assertEqual((info["distill"], info["dense_rows"], info["steps"]), (0.9, 0.25, 3))
            self.assertEqual([e["step"] for e in info["evals"]], [0, 3])
            for k in ("dev_loss", "dev_loss_dense", "dev_retrieval", "dev_retrieval_dense"):
                self.assertIn(k, info["evals"][-1])
            with open(os.path.join(out, "train_log.jsonl")) as f:
                logged = [json.loads(l) for l in f]
            self.assertTrue(any("kl_atp" in r and "kl_dense" in r for r in logged))
            M.load_checkpoint(out)  # the adapted weights load as an HF checkpoint


if __name__ == "__main__":
    unittest.main()
