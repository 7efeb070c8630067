#!/usr/bin/env python3
"""Load benchmark of `atp serve`: throughput, time to first token and inter-token latency (p50/p99)
against client concurrency, per KV policy, and how many sequences run at once in a fixed --kv-memory.

Starts one server per policy on a free loopback port, drives it with streaming /v1/completions
requests (one text prompt, greedy, ignore_eos so each makes exactly --max-tokens tokens, logprobs 0 as
issue 17 measured) at each concurrency, and measures on the client side with bench/serve_load.py's
engine (how it counts tokens and times them: its docstring). Standard library only. It does not tune
the server or retry failures: a failed request is reported and makes the run exit non-zero.

  bench/server_bench.py --atp build/atp -m ../shared/models/ref-5m \
      --kv dense --kv dense:dtype=bf16 --kv atp:block=64,rank=16,window=64 --json out.json --plot plots/

The JSON also names the machine (and GPUs), its load average before and after, the checkout's commit
(`-dirty` with uncommitted changes to src/), `atp --version` and the prompt's length in tokens. `--plot DIR`
then draws it with `atp plot serving JSON -o DIR` (throughput, TTFT and inter-token latency against
concurrency, one series per policy; the same command redraws a saved JSON).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from serve_load import Server, completion_body, environment, http_json, run_load, summarize

PASSAGE = (
    "And the LORD spake unto Moses, saying, Speak unto the children of Israel, that they bring me an offering: of "
    "every man that giveth it willingly with his heart ye shall take my offering. The Fulton County Grand Jury said "
    "Friday an investigation of recent primary election produced no evidence that any irregularities took place. "
)


def bodies(prompt, max_tokens, logprobs, count):
    """`count` greedy streaming requests for `max_tokens` tokens each (ignore_eos), with `logprobs` if >= 0."""
    return [completion_body(None, prompt, max_tokens, extra={"logprobs": logprobs} if logprobs >= 0 else None)] * count


def load_level(url, prompt, args, concurrency, requests):
    """`requests` requests, `concurrency` at a time: throughput and the p50/p99 of TTFT and inter-token latency."""
    results, wall = run_load(url, bodies(prompt, args.max_tokens, args.logprobs, requests), max_concurrency=concurrency)
    s = summarize(results, wall)
    return {"concurrency": concurrency, "requests": requests, "errors": s["errors"], "wall_s": wall,
            "tokens": s["total_output_tokens"], "tok_s": s["output_throughput"],
            "ttft_p50_ms": s["median_ttft_ms"], "ttft_p99_ms": s["p99_ttft_ms"],
            "itl_p50_ms": s["median_itl_ms"], "itl_p99_ms": s["p99_itl_ms"]}


def capacity(args, kv, prompt):
    """Peak of atp_running_sequences while more requests than can fit wait for --kv-memory."""
    n = args.capacity_requests
    srv = Server(args.atp, args.model, ["--kv", kv, "--kv-memory", args.capacity_kv_memory, "--max-seqs", str(n),
                                         "--max-batch-tokens", str(max(n, 256)), "--max-queue", str(n)] + args.server_arg)
    try:
        results = []
        load = threading.Thread(target=lambda: results.extend(
            run_load(srv.base_url, bodies(prompt, args.max_tokens, args.logprobs, n))[0]))
        load.start()
        peak, per_seq = 0, 0.0
        while load.is_alive():
            m = srv.metrics()
            running = int(m.get("atp_running_sequences", 0))
            if running > peak:
                peak, per_seq = running, m.get("atp_kv_bytes_reserved", 0) / running
            time.sleep(0.02)
        load.join()
        return {"kv_memory": args.capacity_kv_memory, "requests": n, "peak_running": peak,
                "reserved_mib_per_seq": per_seq / 2**20,
                "errors": [r["error"] for r in results if r["error"]]}
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
    ap.add_argument("--max-tokens", type=int, default=128, help="tokens per request (ignore_eos: exactly these)")
    ap.add_argument("--logprobs", type=int, default=0, help="logprobs per request (as issue 17 measured; -1: none)")
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
    report = {"model": args.model, "prompt_words": args.prompt_words, "max_tokens": args.max_tokens,
              "logprobs": args.logprobs, "concurrency": [int(x) for x in args.concurrency.split(",")],
              "requests": args.requests, "repeat": args.repeat, "capacity_prompt_words": args.capacity_prompt_words,
              "server_args": args.server_arg, **environment(args.atp), "policies": []}
    failed = False
    for kv in args.kv or ["dense"]:
        srv = Server(args.atp, args.model, ["--kv", kv] + args.server_arg)
        try:
            if "prompt_tokens" not in report:  # as the server counts them, BOS included
                status, tok = http_json(srv.base_url, "POST", "/tokenize", {"prompt": prompt, "add_special_tokens": True})
                if status == 200:
                    report["prompt_tokens"] = tok["count"]
            run_load(srv.base_url, bodies(prompt, 8, args.logprobs, 1))  # warm-up
            levels = []
            for c in [int(x) for x in args.concurrency.split(",")]:
                runs = [load_level(srv.base_url, prompt, args, c, args.requests or max(8, 3 * c))
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
