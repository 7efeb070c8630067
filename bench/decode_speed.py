#!/usr/bin/env python3
"""Decode speed of one model in several weight types, for one or more atp binaries side by side.

Runs `atp bench --json` for every (round, threads, file, binary) with the binaries interleaved
innermost, so a change in the machine's load hits all of them alike, and prints a markdown table of
medians over the rounds: decode ms/token, tok/s, MB read per token, and the fraction of the
read-bandwidth roofline (bytes per token / time against the median read bandwidth that
`atp bench --roofline` measures once per round and thread count, with the first binary and file;
above 100% means the weights are served from the caches).

  bench/decode_speed.py --bin before=/tmp/atp_old --bin after=build/atp \
      --file f16=/tmp/atp40-f16.gguf --file q4_k_m=/tmp/atp40-q4_k_m.gguf --threads 1 2 --rounds 3
"""
import argparse
import json
import statistics
import subprocess


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", required=True, help="NAME=PATH of an atp binary (repeatable)")
    ap.add_argument("--file", action="append", required=True, help="NAME=PATH of a model (repeatable)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bench-args", default="--prompt-tokens 64 --decode-context 64 --decode-tokens 32 --repeats 5")
    ap.add_argument("--json-out", help="also write every run's JSON here")
    a = ap.parse_args()
    bins = [b.split("=", 1) for b in a.bin]
    files = [f.split("=", 1) for f in a.file]
    runs, bandwidth = {}, {}
    for rnd in range(a.rounds):
        for t in a.threads:
            cmd = [bins[0][1], "bench", "-m", files[0][1], "-t", str(t), "--roofline", "--json", "--repeats", "1",
                   "--decode-tokens", "4", "--prompt-tokens", "16", "--decode-context", "16"]
            bw = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)["bandwidth_gb_s"]
            bandwidth.setdefault(t, []).append(bw)
            print(f"round {rnd} -t {t}: read bandwidth {bw:.2f} GB/s", flush=True)
            for fname, fpath in files:
                for bname, bpath in bins:
                    cmd = [bpath, "bench", "-m", fpath, "-t", str(t), "--json"] + a.bench_args.split()
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                    j = json.loads(out)
                    runs.setdefault((t, fname, bname), []).append(j)
                    print(f"round {rnd} -t {t} {fname} {bname}: {j['decode_ms_per_token']:.2f} ms/token", flush=True)
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"bandwidth_gb_s": bandwidth,
                       "runs": [{"threads": t, "file": fn, "bin": bn, "runs": r} for (t, fn, bn), r in runs.items()]}, f, indent=1)
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    names = [b for b, _ in bins]
    print()
    print("| threads | file | MB / token | " + " | ".join(f"{n} ms/token (tok/s, roofline)" for n in names) +
          (f" | {names[-1]} / {names[0]} speed-up |" if len(names) > 1 else " |"))
    print("|---|---|---|" + "---|" * len(names) + ("---|" if len(names) > 1 else ""))
    for t in a.threads:
        for fname, _ in files:
            cells, ms = [], []
            for n in names:
                rs = runs[(t, fname, n)]
                m = med(rs, "decode_ms_per_token")
                ms.append(m)
                roof = med(rs, "bytes_per_decode_token") / (m / 1000) / (statistics.median(bandwidth[t]) * 1e9)
                cells.append(f"{m:.2f} ({1000 / m:.0f}, {100 * roof:.0f}%)")
            mb = med(runs[(t, fname, names[0])], "bytes_per_decode_token") / 1e6
            row = f"| {t} | {fname} | {mb:.1f} | " + " | ".join(cells) + " |"
            if len(names) > 1:
                row += f" {ms[0] / ms[-1]:.2f}x |"
            print(row)
    for t, bw in bandwidth.items():
        print(f"\n-t {t}: read bandwidth median {statistics.median(bw):.2f} GB/s (min {min(bw):.2f}, max {max(bw):.2f})")


if __name__ == "__main__":
    main()
