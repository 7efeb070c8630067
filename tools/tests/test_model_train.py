"""Model, checkpoint files and trainer on tiny shapes."""
import json
import math
import os
import tempfile
import unittest

import torch
import torch.nn.functional as F

from tools.tests._common import SHARED, tiny_cache
import model as M
import safetensors_io as st
import train

TINY = M.Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8, bos_token_id=296, eos_token_id=297)


class ModelTest(unittest.TestCase):
    def test_hf_names_and_shapes(self):
        sd = M.LlamaForCausalLM(TINY).state_dict()
        self.assertIn("model.embed_tokens.weight", sd)
        self.assertEqual(tuple(sd["model.layers.1.self_attn.k_proj.weight"].shape), (16, 32))
        self.assertEqual(tuple(sd["model.layers.0.mlp.gate_proj.weight"].shape), (64, 32))
        for n in ("input_layernorm", "post_attention_layernorm"):
            self.assertIn(f"model.layers.0.{n}.weight", sd)
        self.assertIn("model.norm.weight", sd)
        self.assertNotIn("lm_head.weight", sd)

    def test_loss_decreases_on_fixed_batch(self):
        torch.manual_seed(0)
        m = M.LlamaForCausalLM(TINY)
        x = torch.randint(0, 300, (4, 33))
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        losses = []
        for _ in range(40):
            lg = m(x[:, :-1])
            loss = F.cross_entropy(lg.reshape(-1, 300), x[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        self.assertAlmostEqual(losses[0], math.log(300), delta=0.3)
        self.assertLess(losses[-1], 0.5 * losses[0])

    def test_causal(self):
        m = M.LlamaForCausalLM(TINY).eval()
        x = torch.randint(0, 300, (1, 20))
        y = x.clone()
        y[0, 12:] = torch.randint(0, 300, (8,))
        with torch.no_grad():
            self.assertTrue(torch.allclose(m(x)[0, :12], m(y)[0, :12], atol=1e-5))

    def test_safetensors_round_trip(self):
        t = {"a": torch.randn(3, 4), "b": torch.randn(5).to(torch.bfloat16), "c": torch.arange(7, dtype=torch.int32)}
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "x.safetensors")
            st.save_file(t, p, metadata={"k": "v"})
            header, start = st.read_header(p)
            self.assertEqual(start % 8, 0)
            self.assertEqual(header["b"]["dtype"], "BF16")
            self.assertEqual(header["__metadata__"], {"k": "v"})
            self.assertEqual(os.path.getsize(p), start + header["c"]["data_offsets"][1])
            back, meta = st.load_file(p)
            for k in t:
                self.assertTrue(torch.equal(back[k], t[k]))

    @unittest.skipUnless(os.path.isdir(os.path.join(SHARED, "models/ref-5m")), "needs ref-5m")
    def test_matches_ref5m_reference_logits(self):
        ref = os.path.join(SHARED, "models/ref-5m")
        m = M.load_checkpoint(ref).eval()
        r, _ = st.load_file(os.path.join(ref, "reference/logits.safetensors"))
        with torch.no_grad():
            lg = m(r["prompt1.ids"].long()[None])[0]
        self.assertLess((lg - r["prompt1.logits"]).abs().max().item(), 1e-3)


class TrainCliTest(unittest.TestCase):
    def test_few_steps_and_files(self):
        with tempfile.TemporaryDirectory() as d:
            tok = tiny_cache(d)
            out = os.path.join(d, "ckpt")
            args = train.build_parser().parse_args(
                ["--data", d, "--out", out, "--layers", "2", "--d-model", "32", "--heads", "4",
                 "--kv-heads", "2", "--head-dim", "8", "--ffn", "64", "--ctx", "64", "--batch", "4",
                 "--steps", "6", "--warmup", "2", "--eval-every", "3", "--select", "best"])
            m, summary = train.train(args)
            self.assertEqual(summary["steps"], 6)
            with open(os.path.join(out, "config.json")) as f:
                cfg = json.load(f)
            for k, v in {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 32,
                         "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                         "head_dim": 8, "num_hidden_layers": 2, "vocab_size": len(tok),
                         "tie_word_embeddings": True, "bos_token_id": tok.bos_id,
                         "eos_token_id": tok.eos_id, "torch_dtype": "bfloat16"}.items():
                self.assertEqual(cfg[k], v, k)
            for k in ("max_position_embeddings", "rms_norm_eps", "rope_theta"):
                self.assertIn(k, cfg)
            header, _ = st.read_header(os.path.join(out, "model.safetensors"))
            names = set(header) - {"__metadata__"}
            self.assertEqual(len(names), 2 + 2 * 9)
            self.assertNotIn("lm_head.weight", names)
            self.assertTrue(all(header[n]["dtype"] == "BF16" for n in names))
            self.assertTrue(os.path.exists(os.path.join(out, "tokenizer.json")))
            self.assertTrue(os.path.exists(os.path.join(out, "tokenizer_config.json")))
            # the saved bf16 weights load back to the trained model (rounded to bf16)
            m2 = M.load_checkpoint(out).eval()
            x = torch.randint(0, len(tok), (1, 16))
            with torch.no_grad():
                m.eval()
                sd = {k: v.to(torch.bfloat16).float() for k, v in m.state_dict().items()}
                m.load_state_dict(sd)
                self.assertTrue(torch.allclose(m(x), m2(x), atol=1e-5))
            with open(os.path.join(out, "train_log.jsonl")) as f:
                log = [json.loads(l) for l in f]
            self.assertTrue(any("dev_loss" in r for r in log))


if __name__ == "__main__":
    unittest.main()
