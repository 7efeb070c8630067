#!/usr/bin/env python3
"""Serving benchmark in the manner of `vllm bench serve`: a random dataset, Poisson arrivals or a
concurrency cap, and request throughput, output and total tok/s, TTFT, TPOT, ITL and end-to-end latency
(mean, median, p99), printed as vLLM prints them and written as JSON. Standard library only.

Drives any OpenAI-compatible server already running (`--base-url`: `atp serve`, llama.cpp's
`llama-server`, vLLM), or starts `atp serve` itself on a free loopback port (`--atp`, `-m DIR`,
`--server-arg`). Each request is a streaming POST /v1/completions whose prompt is `--input-len` random
token ids below the vocabulary size (from /v1/models: `vocab_size`, llama.cpp's `meta.n_vocab`, or
`--vocab-size`), with `max_tokens` = `--output-len`, `ignore_eos: true` (so each makes exactly that many
tokens; unlike vLLM's, on by default), greedy unless `--temperature`, and
`stream_options.include_usage`.

How it measures, on the client: one connection per request, timed from before it opens. A stream
chunk whose choice has no finish reason, or has text, is a token's arrival (atp and vLLM send one per
token, atp even when its text is held back; llama.cpp's last chunk carries only the finish reason);
`usage.completion_tokens` is the request's token count when the server sends it (then arrivals beyond
it are text released at the end, not tokens). TTFT: to the first arrival; ITL: the gaps between
arrivals; TPOT: (E2E - TTFT) / (tokens - 1); E2E: to the end of the stream. A request fails on a
transport error, a status other than 200, an error event, a stream without [DONE] or no token; failures
are counted, listed and make the exit status 1. One warm-up request (a prompt of its own) runs first, untimed.

  bench/serve_load.py --atp build/atp -m ../shared/models/ref-5m --input-len 128 --output-len 32 \\
      --num-prompts 64 --max-concurrency 8 --json out.json
  bench/serve_load.py --base-url http://127.0.0.1:8080 --input-len 1024 --output-len 128 \\
      --num-prompts 256 --max-concurrency 64

bench/server_bench.py (one `atp serve` per KV policy, sweeps of concurrency, plots) runs on this engine.
"""
import argparse
import asyncio
import http.client
import json
import math
import os
import platform
import random
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
from results import engine_commit  # noqa: E402 - the commit as docs/results/*.json name it


def percentile(xs, q):
    """The q-th percentile with linear interpolation between order statistics (numpy's default)."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


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


def gpus():
    """The GPUs nvidia-smi names, [] without one."""
    if not shutil.which("nvidia-smi"):
        return []
    r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return [line.strip() for line in r.stdout.splitlines() if line.strip()] if r.returncode == 0 else []


def environment(atp=None):
    """What server_bench.py's reports record about the run: machine, checkout and time."""
    env = {"cpus": os.cpu_count(), "machine": machine(), "gpus": gpus(), "host": platform.node(),
           "commit": engine_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "load_average": {"before": list(os.getloadavg())}}
    if atp:
        env["atp_version"] = subprocess.run([atp, "--version"], capture_output=True, text=True).stdout.strip()
    return env


def http_json(base_url, method, path, body=None, api_key=None, timeout=30):
    """A small JSON request; returns (status, parsed body or None)."""
    u = urllib.parse.urlsplit(base_url)
    conn = (http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection)(u.netloc, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = "Bearer " + api_key
    try:
        conn.request(method, u.path.rstrip("/") + path, json.dumps(body) if body is not None else None, headers)
        r = conn.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, None
    finally:
        conn.close()


class Server:
    """`atp serve -m MODEL EXTRA...` on a free loopback port; stderr goes to a log file whose first line names
    the port, shown if the server does not start and removed when it stops."""

    def __init__(self, atp, model, extra):
        self.log = open(f"/tmp/atp_serve_load_{os.getpid()}.log", "w+")
        args = [atp, "serve", "-m", model, "--port", "0"] + extra
        self.proc = subprocess.Popen(args, stderr=self.log, stdout=subprocess.DEVNULL)
        deadline = time.time() + 120
        self.port = None
        while self.port is None:
            if self.proc.poll() is not None or time.time() > deadline:
                self.log.seek(0)
                log = self.log.read()
                self.stop()
                sys.exit(f"atp serve did not start: {log}")
            self.log.seek(0)
            m = re.search(r"http://[^:]+:(\d+)", self.log.read())
            self.port = int(m.group(1)) if m else None
            time.sleep(0.05)
        self.base_url = f"http://127.0.0.1:{self.port}"

    def metrics(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^([a-z_]+) ([0-9.e+-]+)$", text, re.M)}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=120)
        self.log.close()
        os.remove(self.log.name)


def server_model(base_url, api_key=None):
    """The first model /v1/models lists: (id, vocabulary size or None, max_model_len or None)."""
    status, j = http_json(base_url, "GET", "/v1/models", api_key=api_key)
    if status != 200 or not j or not j.get("data"):
        raise RuntimeError(f"GET {base_url}/v1/models answered {status}: {j}")
    card = j["data"][0]
    vocab = card.get("vocab_size") or (card.get("meta") or {}).get("n_vocab")
    return card["id"], vocab, card.get("max_model_len")


def wait_ready(base_url, api_key, timeout):
    """server_model(), asked again every second for up to `timeout` seconds while the server starts."""
    deadline = time.time() + timeout
    while True:
        try:
            return server_model(base_url, api_key)
        except (OSError, RuntimeError):
            if time.time() >= deadline:
                raise
            time.sleep(1)


def random_prompts(num, input_len, vocab_size, seed, prefix_len=0):
    """`num` prompts of `input_len` token ids drawn uniformly below `vocab_size`, after `prefix_len` ids
    that every prompt shares (vLLM's --random-prefix-len: a system prompt, for prefix caching)."""
    rng = random.Random(seed)
    prefix = [rng.randrange(vocab_size) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(vocab_size) for _ in range(input_len)] for _ in range(num)]


def completion_body(model, prompt, max_tokens, temperature=0.0, ignore_eos=True, extra=None):
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature, "stream": True,
            "stream_options": {"include_usage": True}}
    if model:
        body["model"] = model
    if ignore_eos:
        body["ignore_eos"] = True
    body.update(extra or {})
    return body


async def _sse_lines(reader, chunked):
    """The lines of a response body, decoding chunked transfer coding."""
    if not chunked:
        while True:
            line = await reader.readline()
            if not line:
                return
            yield line
    buf = b""
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return
        buf += (await reader.readexactly(size + 2))[:-2]
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line


async def _request(url, payload, api_key):
    """One streaming completion. Returns the request's record: its arrivals, usage and error."""
    out = {"start": time.perf_counter(), "arrivals": [], "end": None, "usage": None, "error": None}
    writer = None
    try:
        secure = url.scheme == "https"
        reader, writer = await asyncio.open_connection(url.hostname, url.port or (443 if secure else 80),
                                                       ssl=ssl.create_default_context() if secure else None,
                                                       limit=1 << 24)
        head = (f"POST {url.path.rstrip('/')}/v1/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
                f"Content-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {len(payload)}\r\n"
                + (f"Authorization: Bearer {api_key}\r\n" if api_key else "") + "Connection: close\r\n\r\n")
        writer.write(head.encode() + payload)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        chunked = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.partition(b":")
            chunked |= k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower()
        if status != 200:
            body = b"".join([line async for line in _sse_lines(reader, chunked)])
            out["error"] = f"HTTP {status}: {body[:300].decode(errors='replace')}"
            return out
        done = False
        async for line in _sse_lines(reader, chunked):
            if not line.startswith(b"data:"):
                continue
            now = time.perf_counter()
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            # Most chunks are a token's: known without parsing (servers write compact JSON), which keeps
            # the client's time per chunk small at tens of thousands of tokens per second.
            if b'"finish_reason":null' in data:
                out["arrivals"].append(now)
                continue
            ev = json.loads(data)
            if "error" in ev:
                out["error"] = f"error event: {json.dumps(ev['error'])[:300]}"
                return out
            if ev.get("usage"):
                out["usage"] = ev["usage"]
            for c in ev.get("choices") or []:
                text = c.get("text", (c.get("delta") or {}).get("content"))
                if c.get("finish_reason") is None or text or c.get("logprobs"):
                    out["arrivals"].append(now)
        out["end"] = time.perf_counter()
        if not done:
            out["error"] = "the stream ended without [DONE]"
    except Exception as e:  # noqa: BLE001 - a malformed answer too is the request's failure, reported
        out["error"] = repr(e)
    finally:
        if writer is not None:
            writer.close()
    return out


def _measure(rec, prompt_len):
    """A request's figures from its record (times in seconds)."""
    usage = rec["usage"] or {}
    arrivals = rec["arrivals"]
    tokens = usage.get("completion_tokens", len(arrivals))
    arrivals = arrivals[:tokens]  # beyond usage's count: text released at the end, not a token
    r = {"prompt_tokens": usage.get("prompt_tokens", prompt_len), "output_tokens": tokens, "chunks": len(rec["arrivals"]),
         "error": rec["error"] or (None if arrivals else "no token arrived")}
    if r["error"] is None:
        r["ttft_s"] = arrivals[0] - rec["start"]
        r["e2el_s"] = rec["end"] - rec["start"]
        r["itl_s"] = [b - a for a, b in zip(arrivals, arrivals[1:])]
        if tokens > 1:
            r["tpot_s"] = (r["e2el_s"] - r["ttft_s"]) / (tokens - 1)
    return r


async def _run(base_url, bodies, prompt_lens, request_rate, max_concurrency, seed, api_key, timeout):
    url = urllib.parse.urlsplit(base_url)
    sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    rng = random.Random(seed + 1)  # arrivals; the prompts draw from `seed`

    async def one(body):
        payload = json.dumps(body).encode()
        if sem is None:
            return await asyncio.wait_for(_request(url, payload, api_key), timeout)
        async with sem:
            return await asyncio.wait_for(_request(url, payload, api_key), timeout)

    async def guarded(body):
        t0 = time.perf_counter()
        try:
            return await one(body)
        except asyncio.TimeoutError:
            return {"start": t0, "arrivals": [], "end": None, "usage": None, "error": f"no answer in {timeout} s"}

    start = time.perf_counter()
    due, tasks = start, []
    for body in bodies:
        if request_rate != math.inf:  # Poisson arrivals: exponential gaps of mean 1 / rate
            due += rng.expovariate(request_rate)
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.ensure_future(guarded(body)))
    records = await asyncio.gather(*tasks)
    duration = time.perf_counter() - start
    return [_measure(rec, n) for rec, n in zip(records, prompt_lens)], duration


def run_load(base_url, bodies, prompt_lens=None, request_rate=math.inf, max_concurrency=None, seed=0, api_key=None,
             timeout=600.0):
    """Sends the request bodies (streaming /v1/completions) as a load; returns (per-request figures, seconds)."""
    lens = prompt_lens or [len(b["prompt"]) if isinstance(b["prompt"], list) else None for b in bodies]
    return asyncio.run(_run(base_url, bodies, lens, request_rate, max_concurrency, seed, api_key, timeout))


def summarize(requests, duration):
    """vLLM's figures over the successful requests: totals, rates and mean/median/p99 of each latency (ms)."""
    ok = [r for r in requests if r["error"] is None]
    tokens_in = sum(r["prompt_tokens"] or 0 for r in ok)
    tokens_out = sum(r["output_tokens"] for r in ok)
    s = {"duration": duration, "completed": len(ok), "failed": len(requests) - len(ok),
         "total_input_tokens": tokens_in, "total_output_tokens": tokens_out,
         "request_throughput": len(ok) / duration, "output_throughput": tokens_out / duration,
         "total_token_throughput": (tokens_in + tokens_out) / duration}
    series = {"ttft": [r["ttft_s"] for r in ok], "tpot": [r["tpot_s"] for r in ok if "tpot_s" in r],
              "itl": [g for r in ok for g in r["itl_s"]], "e2el": [r["e2el_s"] for r in ok]}
    for name, xs in series.items():
        s[f"mean_{name}_ms"] = 1e3 * sum(xs) / len(xs) if xs else float("nan")
        s[f"median_{name}_ms"] = 1e3 * percentile(xs, 50)
        s[f"p99_{name}_ms"] = 1e3 * percentile(xs, 99)
    s["errors"] = [r["error"] for r in requests if r["error"] is not None]
    return s


def print_table(s, request_rate, max_concurrency):
    """The figures as `vllm bench serve` prints them."""
    rows = [("Successful requests:", s["completed"]), ("Failed requests:", s["failed"]),
            ("Request rate configured (RPS):", request_rate),
            ("Maximum request concurrency:", max_concurrency),
            ("Benchmark duration (s):", s["duration"]), ("Total input tokens:", s["total_input_tokens"]),
            ("Total generated tokens:", s["total_output_tokens"]),
            ("Request throughput (req/s):", s["request_throughput"]),
            ("Output token throughput (tok/s):", s["output_throughput"]),
            ("Total token throughput (tok/s):", s["total_token_throughput"])]
    print("{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="="))
    for label, v in rows:
        print(f"{label:<40} {v:<10.2f}" if isinstance(v, float) else f"{label:<40} {str(v):<10}")
    for name, title in [("ttft", "Time to First Token"), ("tpot", "Time per Output Token (excl. 1st token)"),
                        ("itl", "Inter-token Latency"), ("e2el", "End-to-end Latency")]:
        print("{s:{c}^{n}}".format(s=title, n=50, c="-"))
        for stat, label in [("mean", "Mean"), ("median", "Median"), ("p99", "P99")]:
            print(f"{label + ' ' + name.upper() + ' (ms):':<40} {s[f'{stat}_{name}_ms']:<10.2f}")
    print("=" * 50, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_argument_group("server (one of)")
    where.add_argument("--base-url", help="an OpenAI-compatible server already running, e.g. http://127.0.0.1:8000")
    where.add_argument("-m", "--model-dir", help="start `atp serve -m DIR` (with --atp and --server-arg)")
    where.add_argument("--atp", default="build/atp", help="the atp binary to start (default build/atp)")
    where.add_argument("--server-arg", action="append", default=[], help="extra flag for atp serve (repeatable)")
    ap.add_argument("--model", help="the model id requests name (default: the first /v1/models lists)")
    ap.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer token (default $OPENAI_API_KEY)")
    ap.add_argument("--dataset-name", default="random", choices=["random"])
    ap.add_argument("--input-len", "--random-input-len", type=int, default=1024, help="prompt tokens per request")
    ap.add_argument("--output-len", "--random-output-len", type=int, default=128, help="tokens generated per request")
    ap.add_argument("--prefix-len", "--random-prefix-len", type=int, default=0,
                    help="random tokens every prompt starts with, before its --input-len own (default 0)")
    ap.add_argument("--vocab-size", type=int, help="prompt ids are drawn below it (default: from /v1/models)")
    ap.add_argument("--num-prompts", type=int, default=1000)
    ap.add_argument("--request-rate", type=float, default=math.inf,
                    help="requests per second, Poisson arrivals (default inf: all at once)")
    ap.add_argument("--max-concurrency", type=int, help="requests in flight at most (default: no cap)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the prompts and the arrivals")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                    help="do not send ignore_eos (requests may then end early)")
    ap.add_argument("--extra-body", type=json.loads, default={}, help="JSON object merged into each request, "
                    "e.g. '{\"kv\": \"mx:fmt=fp8_e4m3\"}' for atp")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds one request may take")
    ap.add_argument("--ready-check-timeout-sec", type=float, default=0.0,
                    help="wait this long for --base-url to answer /v1/models (a server still starting)")
    ap.add_argument("--label", help="a name for the run, kept in the JSON")
    ap.add_argument("--json", help="write the figures, the settings and every request's to this file")
    args = ap.parse_args()
    if bool(args.base_url) == bool(args.model_dir):
        ap.error("give either --base-url or -m/--model-dir")
    if args.input_len < 1 or args.output_len < 1 or args.num_prompts < 1:
        ap.error("--input-len, --output-len and --num-prompts must be positive")
    if args.prefix_len < 0:
        ap.error("--prefix-len must be >= 0")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        ap.error("--max-concurrency must be positive")
    if not args.request_rate > 0:
        ap.error("--request-rate must be positive (inf: all at once)")

    env = environment(args.atp if args.model_dir else None)
    srv = Server(args.atp, args.model_dir, args.server_arg) if args.model_dir else None
    try:
        base_url = srv.base_url if srv else args.base_url
        try:
            model, vocab, max_len = wait_ready(base_url, args.api_key, args.ready_check_timeout_sec)
        except (OSError, RuntimeError) as e:
            sys.exit(f"{base_url} is not serving: {e!r}")
        model = args.model or model
        vocab = args.vocab_size or vocab
        if not vocab:
            sys.exit(f"{base_url}/v1/models does not say the vocabulary size: give --vocab-size")
        # One prompt more, for the warm-up: a prompt of its own, so that no timed request finds it cached
        # (only the shared --prefix-len tokens, as a server with prefix caching would after its first request).
        prompts = random_prompts(args.num_prompts + 1, args.input_len, vocab, args.seed, args.prefix_len)
        bodies = [completion_body(model, p, args.output_len, args.temperature, args.ignore_eos, args.extra_body)
                  for p in prompts]
        warm, _ = run_load(base_url, bodies[-1:], api_key=args.api_key, timeout=args.timeout)
        if warm[0]["error"]:
            sys.exit(f"the warm-up request failed: {warm[0]['error']}")
        requests, duration = run_load(base_url, bodies[:-1], request_rate=args.request_rate,
                                      max_concurrency=args.max_concurrency, seed=args.seed,
                                      api_key=args.api_key, timeout=args.timeout)
    finally:
        if srv:
            srv.stop()
    s = summarize(requests, duration)
    print_table(s, args.request_rate, args.max_concurrency)
    short = sum(1 for r in requests if r["error"] is None and r["output_tokens"] != args.output_len)
    if short:
        print(f"note: {short} successful requests made other than {args.output_len} tokens "
              "(the server ignored ignore_eos, or the context ran out)", file=sys.stderr)
    for e in s["errors"][:5]:
        print("error:", e, file=sys.stderr)
    if args.json:
        env["load_average"]["after"] = list(os.getloadavg())
        report = dict(env, label=args.label, base_url=None if srv else base_url, model_id=model,
                      server={"atp": args.atp, "model_dir": args.model_dir, "server_args": args.server_arg} if srv else None,
                      max_model_len=max_len, vocab_size=vocab, dataset_name=args.dataset_name,
                      input_len=args.input_len, prefix_len=args.prefix_len, output_len=args.output_len,
                      num_prompts=args.num_prompts,
                      request_rate=str(args.request_rate), max_concurrency=args.max_concurrency, seed=args.seed,
                      temperature=args.temperature, ignore_eos=args.ignore_eos, extra_body=args.extra_body,
                      wrong_length=short, **s, requests=requests)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    sys.exit(1 if s["failed"] else 0)


if __name__ == "__main__":
    main()
