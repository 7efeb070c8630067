"""bench/serve_load.py, the serving load generator: against `atp serve` on a small model (every request
makes exactly --output-len tokens, one stream event each), and against a stand-in server in vLLM's stream
layout that fails some requests (counted, listed, exit status 1)."""
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "bench", "serve_load.py")


def run_load(*args):
    """Runs the generator with --json into a temporary file: (process, report or None)."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "load.json")
        p = subprocess.run([sys.executable, SCRIPT, "--json", out, *args], capture_output=True, text=True, timeout=120)
        report = None
        if os.path.exists(out):
            with open(out) as f:
                report = json.load(f)
        return p, report


class AgainstAtpServe(unittest.TestCase):
    def test_each_request_makes_output_len_tokens(self):
        atp = os.environ.get("ATP_BINARY", os.path.join(ROOT, "build", "atp"))
        if not os.access(atp, os.X_OK):
            self.skipTest(f"no atp binary at {atp} (ctest passes ATP_BINARY)")
        # ref-5m is the smallest; the embedded default model stands in when ../shared is absent.
        model = os.path.join(ROOT, "..", "shared", "models", "ref-5m")
        if not os.path.exists(os.path.join(model, "model.safetensors")):
            model = os.path.join(ROOT, "models", "atp-12m")
        p, j = run_load("--atp", atp, "-m", model, "--server-arg=-c", "--server-arg=128", "--num-prompts", "8",
                        "--input-len", "16", "--output-len", "8", "--max-concurrency", "4", "--seed", "3")
        self.assertEqual(p.returncode, 0, p.stderr + p.stdout)
        self.assertIn("Serving Benchmark Result", p.stdout)
        self.assertIn("Median ITL (ms):", p.stdout)
        self.assertEqual((j["completed"], j["failed"], j["errors"]), (8, 0, []))
        self.assertEqual(j["total_input_tokens"], 8 * 16)  # ids as they are: no BOS added
        self.assertEqual(j["total_output_tokens"], 8 * 8)
        self.assertEqual(j["wrong_length"], 0)
        for r in j["requests"]:
            self.assertEqual(r["output_tokens"], 8, r)
            self.assertEqual(len(r["itl_s"]), 7, r)  # one event per token, even with its text held back
            self.assertLessEqual(r["ttft_s"], r["e2el_s"])
            self.assertAlmostEqual(r["tpot_s"], (r["e2el_s"] - r["ttft_s"]) / 7)
        for key in ("commit", "machine", "cpus", "date", "load_average", "atp_version", "vocab_size"):
            self.assertIn(key, j)
        self.assertLessEqual(j["median_ttft_ms"], j["p99_ttft_ms"])
        self.assertGreater(j["output_throughput"], 0)


class StandIn(http.server.BaseHTTPRequestHandler):
    """vLLM's layout: /v1/models without a vocabulary size, one chunk per token whose last carries the
    finish reason, then usage. Completion requests 3, 6, 9... answer 500 (the first is the warm-up)."""
    posts = 0
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.reply(200, {"object": "list", "data": [{"id": "stand-in", "max_model_len": 64}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with StandIn.lock:
            StandIn.posts += 1
            n = StandIn.posts
        if n % 3 == 0:
            return self.reply(500, {"error": {"message": "stand-in failure"}})
        assert body["ignore_eos"] and body["stream"] and max(body["prompt"]) < 50, body
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        k = body["max_tokens"]
        for i in range(k):
            chunk = {"choices": [{"index": 0, "text": "ab", "finish_reason": "length" if i == k - 1 else None}]}
            self.wfile.write(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
            self.wfile.flush()
        usage = {"choices": [], "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": k}}
        self.wfile.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")

    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class AgainstAStandIn(unittest.TestCase):
    def test_failures_are_counted_and_fail_the_run(self):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            p, j = run_load("--base-url", f"http://127.0.0.1:{srv.server_port}", "--vocab-size", "50",
                            "--num-prompts", "8", "--input-len", "5", "--output-len", "6", "--request-rate", "500")
        finally:
            srv.shutdown()
            srv.server_close()
        self.assertEqual(p.returncode, 1, p.stderr + p.stdout)
        self.assertEqual((j["completed"], j["failed"]), (5, 3))  # posts 3, 6 and 9 of 9
        self.assertEqual(len(j["errors"]), 3)
        self.assertTrue(all(e.startswith("HTTP 500") for e in j["errors"]), j["errors"])
        self.assertEqual(j["total_output_tokens"], 5 * 6)
        self.assertEqual(j["model_id"], "stand-in")
        for r in j["requests"]:
            if r["error"] is None:
                self.assertEqual((r["output_tokens"], r["chunks"], len(r["itl_s"])), (6, 6, 5))


if __name__ == "__main__":
    unittest.main()
