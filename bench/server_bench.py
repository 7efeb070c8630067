#!/usr/bin/env python3
"""Load benchmark of `atp serve`: throughput, time to first token and inter-token latency (p50/p99)
against client concurrency, per KV policy, and how many sequences run at once in a fixed --kv-memory.

Starts one server per policy on a free loopback port, drives it with streaming /v1/completions
requests (greedy, logprobs=0 so each chunk says how many tokens it carries), and measures on the
client side. Standard library only. It does not tune the server or retry failures: a failed request
is reported and makes the run exit non-zero.

  bench/server_bench.py --atp build/atp -m ../shared/models/ref-5m \
      --kv dense --kv dense:dtype=bf16 --kv atp:block=64,rank=16,window=64 --json out.json --plot plots/

The JSON also names the machine, its load average before and after, the checkout's commit (`-dirty`
with uncommitted changes to src/), `atp --version` and the prompt's length in tokens. `--plot DIR`
then draws it with `atp plot serving JSON -o DIR` (throughput, TTFT and inter-token latency against
concurrency, one series per policy; the same command redraws a saved JSON).
"""
import argparse
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
from results import engine_commit  # noqa: E402 - the commit as docs/results/*.json name it

PASSAGE = (
    "And the LORD spake unto Moses, saying, Speak unto the children of Israel, that they bring me an offering: of "
    "every man that giveth it willingly with his heart ye shall take my offering. The Fulton County Grand Jury said "
    "Friday an investigation of recent primary election produced no evidence that any irregularities took place. "
)


def percentile(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class Server:
    """`atp serve` on a free port; stderr goes to a log file whose first line names the port."""

    def __init__(self, atp, model, kv, extra):
        self.log = open(f"/tmp/atp_server_bench_{os.getpid()}.log", "w+")
        args = [atp, "serve", "-m", model, "--port", "0", "--kv", kv] + extra
        self.proc = subprocess.Popen(args, stderr=self.log, stdout=subprocess.DEVNULL)
        deadline = time.time() + 60
        self.port = None
        while self.port is None:
            if self.proc.poll() is not None or time.time() > deadline:
                self.log.seek(0)
                sys.exit(f"atp serve did not start: {self.log.read()}")
            self.log.seek(0)
            m = re.search(r"http://[^:]+:(\d+)", self.log.read())
            self.port = int(m.group(1)) if m else None
            time.sleep(0.05)

    def metrics(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^([a-z_]+) ([0-9.e+-]+)$", text, re.M)}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=120)
        self.log.close()


def post_json(port, path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        return json.loads(r.read()) if r.status == 200 else None
    finally:
        c.close()


def machine():
    """The CPU model as /proc/cpuinfo names it (what `atp eval` and `atp analyze` put in their titles)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def stream_request(port, prompt, max_tokens):
    """One streaming completion; returns (ttft_s, [per-token gaps], tokens, error)."""
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True, "logprobs": 0})
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            return None, [], 0, f"HTTP {r.status}: {r.read()[:200]}"
        ttft, last, gaps, tokens, done = None, None, [], 0, False
        for line in r:
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                done = True
                break
            ev = json.loads(data)
            lp = ev["choices"][0].get("logprobs") if ev.get("choices") else None
            n = len(lp["tokens"]) if lp else 0
            if n == 0:
                continue
            now = time.perf_counter()
            if ttft is None:
                ttft = now - t0
                gaps += [0.0] * (n - 1)  # tokens arriving together with the first
            else:
                gaps += [(now - last) / n] * n
            last, tokens = now, tokens + n
        return ttft, gaps, tokens, None if done else "stream ended without [DONE]"
    except Exception as e:  # noqa: BLE001 - reported, and the run fails
        return None, [], 0, repr(e)
    finally:
        c.close()


def load_level(port, prompt, max_tokens, concurrency, requests):
    results, lock = [], threading.Lock()
    next_req = iter(range(requests))

    def client():
        while True:
            with lock:
                if next(next_req, None) is None:
                    return
            res = stream_request(port, prompt, max_tokens)
            with lock:
                results.append(res)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    errors = [e for _, _, _, e in results if e]
    ttfts = [t for t, _, _, e in results if not e]
    itl = [g for _, gaps, _, e in results if not e for g in gaps]
    tokens = sum(n for _, _, n, e in results if not e)
    return {
        "concurrency": concurrency, "requests": requests, "errors": errors, "wall_s": wall,
        "tokens": tokens, "tok_s": tokens / wall,
        "ttft_p50_ms": 1e3 * percentile(ttfts, 50), "ttft_p99_ms": 1e3 * percentile(ttfts, 99),
        "itl_p50_ms": 1e3 * percentile(itl, 50), "itl_p99_ms": 1e3 * percentile(itl, 99),
    }


def capacity(args, kv, prompt):
    """Peak of atp_running_sequences while more requests than can fit wait for --kv-memory."""
    n = args.capacity_requests
    srv = Server(args.atp, args.model, kv, ["--kv-memory", args.capacity_kv_memory, "--max-seqs", str(n),
                                             "--max-batch-tokens", str(max(n, 256)), "--max-queue", str(n)] + args.server_arg)
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(stream_request(srv.port, prompt, args.max_tokens)))
                   for _ in range(args.capacity_requests)]
        for t in threads:
            t.start()
        peak, per_seq = 0, 0.0
        while any(t.is_alive() for t in threads):
            m = srv.metrics()
            running = int(m.get("atp_running_sequences", 0))
            if running > peak:
                peak, per_seq = running, m.get("atp_kv_bytes_reserved", 0) / running
            time.sleep(0.02)
        for t in threads:
            t.join()
        return {"kv_memory": args.capacity_kv_memory, "requests": n, "peak_running": peak,
                "reserved_mib_per_seq": per_seq / 2**20,
                "errors": [e for *_, e in results if e]}
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atp", default="build/atp")
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--kv", action="append", help="policy to measure (repeatable); default dense")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--requests", type=int, default=0, help="requests per level (default max(8, 3 x concurrency))")
    ap.add_argument("--repeat", type=int, default=3, help="runs per level; figures are their medians")
    ap.add_argument("--prompt-words", type=int, default=96)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--capacity-kv-memory", default="64M", help="--kv-memory of the capacity run")
    ap.add_argument("--capacity-requests", type=int, default=96, help="sent at once in the capacity run (0: no capacity run)")
    ap.add_argument("--capacity-prompt-words", type=int, default=700, help="long prompts, where compression shows")
    ap.add_argument("--server-arg", action="append", default=[], help="extra flag for atp serve (repeatable)")
    ap.add_argument("--json", help="also write all figures to this file")
    ap.add_argument("--plot", metavar="DIR", help="draw the figures into DIR with `atp plot serving` "
                    "(the JSON goes to --json, else DIR/serving.json)")
    args = ap.parse_args()
    if args.plot and not args.json:
        os.makedirs(args.plot, exist_ok=True)
        args.json = os.path.join(args.plot, "serving.json")
    words = (PASSAGE * 40).split()
    prompt = " ".join(words[: args.prompt_words])
    version = subprocess.run([args.atp, "--version"], capture_output=True, text=True).stdout.strip()
    report = {"model": args.model, "prompt_words": args.prompt_words, "max_tokens": args.max_tokens,
              "concurrency": [int(x) for x in args.concurrency.split(",")], "requests": args.requests,
              "repeat": args.repeat, "capacity_prompt_words": args.capacity_prompt_words,
              "server_args": args.server_arg, "cpus": os.cpu_count(), "machine": machine(), "host": platform.node(),
              "atp_version": version, "commit": engine_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "load_average": {"before": list(os.getloadavg())}, "policies": []}
    failed = False
    for kv in args.kv or ["dense"]:
        srv = Server(args.atp, args.model, kv, args.server_arg)
        try:
            if "prompt_tokens" not in report:  # as the server counts them, BOS included
                tok = post_json(srv.port, "/tokenize", {"prompt": prompt, "add_special_tokens": True})
                if tok:
                    report["prompt_tokens"] = tok["count"]
            stream_request(srv.port, prompt, 8)  # warm-up
            levels = []
            for c in [int(x) for x in args.concurrency.split(",")]:
                runs = [load_level(srv.port, prompt, args.max_tokens, c, args.requests or max(8, 3 * c))
                        for _ in range(args.repeat)]
                # Medians over repeated runs, as the project reports speed.
                lv = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], float)}
                lv.update(concurrency=c, requests=runs[0]["requests"], repeats=args.repeat,
                          errors=[e for r in runs for e in r["errors"]])
                failed |= bool(lv["errors"])
                levels.append(lv)
                print(f"{kv:40s} c={c:3d}  {lv['tok_s']:8.1f} tok/s  TTFT p50 {lv['ttft_p50_ms']:7.1f} "
                      f"p99 {lv['ttft_p99_ms']:7.1f} ms  ITL p50 {lv['itl_p50_ms']:6.2f} p99 {lv['itl_p99_ms']:6.2f} ms"
                      f"{'  ERRORS ' + str(lv['errors'][:3]) if lv['errors'] else ''}", flush=True)
        finally:
            srv.stop()
        cap = None
        if args.capacity_requests > 0:
            cap = capacity(args, kv, " ".join(words[: args.capacity_prompt_words]))
            failed |= bool(cap["errors"])
            print(f"{kv:40s} --kv-memory {cap['kv_memory']}: {cap['peak_running']} sequences at once "
                  f"({cap['reserved_mib_per_seq']:.2f} MiB reserved each)", flush=True)
        report["policies"].append({"kv": kv, "levels": levels, "capacity": cap})
    report["load_average"]["after"] = list(os.getloadavg())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.plot:
        failed |= subprocess.run([args.atp, "plot", "serving", args.json, "-o", args.plot]).returncode != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
