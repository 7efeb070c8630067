#!/usr/bin/env python3
"""atp and llama.cpp side by side on the same GGUF files, the files written by llama.cpp's own quantizer.

From a model (a directory: `atp convert --type f16` makes the f16 GGUF; or an f16 .gguf) this
  1. writes one file per type with llama.cpp's `llama-quantize` (no imatrix, as a user would);
  2. checks that atp loads every one of them (`atp generate`, greedy, a few tokens);
  3. compares atp's own `convert --type` output with llama-quantize's from the same f16 values, tensor by
     tensor (type and bytes), for --compare-types;
  4. times prefill of 512 tokens and decode of 128 with `llama-bench -p 512 -n 128` and the matching
     `atp bench`, interleaved (per round, thread count and file: llama.cpp then atp), and reports medians
     over the rounds and the ratios atp / llama.cpp;
  5. scores each file with `atp perplexity --chunked` and `llama-perplexity` (its own protocol: chunks
     of 512, the second half of each scored), and compares the two tokenizations of the text.
Writes everything to --json-out with both commits, the machine and the load average, and prints
markdown tables. bench/llama_cpp.sh builds llama.cpp; this script never runs in CI.

  bench/gguf_peer.py --atp build/atp --llama-bin ~/.cache/atp-peers/llama.cpp/build-cpu/bin \
      -m models/atp-40m --work /tmp/peer --threads 1 2 --rounds 3 --json-out /tmp/peer/peer.json

Decode statistic: llama-bench's tg128 is tokens over the summed time of 128 steps from an empty
cache (mean over its repetitions); atp's counterpart is `--decode-context 1 --decode-tokens 128` and
1000 / decode_ms_per_token_mean (the mean step, so slow steps count as in llama-bench), the median
step also recorded. Prefill: both one batch of 512 random tokens into an empty cache.
"""
import argparse
import json
import os
import platform
import re
import statistics
import struct
import subprocess
import sys
import time

# llama-quantize type names -> the file written; types atp reads (issue 18's list).
DEFAULT_TYPES = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q5_K_S", "Q4_K_S", "Q3_K_M", "Q2_K",
                 "Q5_0", "Q5_1", "Q4_1", "IQ4_NL", "IQ4_XS"]
DEFAULT_BENCH = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]
DEFAULT_COMPARE = ["Q8_0", "Q4_0", "Q6_K", "Q4_K_M", "Q5_K_M"]

# ggml type id -> (name, elements per block, bytes per block).
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36), 10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292), 20: ("IQ4_NL", 32, 18), 23: ("IQ4_XS", 256, 136), 30: ("BF16", 1, 2),
}

# GGUF metadata value types: struct format of the scalars; 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class GgufError(ValueError):
    pass


def read_gguf(path):
    """The metadata and tensors of a GGUF file (v2/v3, little-endian): (metadata dict, [tensor dict]).

    Each tensor: name, shape (ggml order, fastest first), type (id), type_name, offset (absolute),
    nbytes; a tensor whose rows are not whole blocks, or that lies past the file's end, is a GgufError.
    Arrays of strings or numbers are lists; only what the comparison needs, not a general reader."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        size = struct.calcsize("<" + fmt)
        if pos + size > len(data):
            raise GgufError(f"{path}: truncated at byte {pos}")
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += size
        return v[0] if len(v) == 1 else v

    def string():
        nonlocal pos
        n = take("Q")
        if pos + n > len(data):
            raise GgufError(f"{path}: string of {n} bytes past the end at byte {pos}")
        s = data[pos:pos + n].decode("utf-8", "replace")
        pos += n
        return s

    def value(t):
        if t in _SCALARS:
            return take(_SCALARS[t])
        if t == 8:
            return string()
        if t == 9:
            et, n = take("I"), take("Q")
            if et in _SCALARS:  # numbers in one unpack: vocabularies have 10^5 entries
                nonlocal pos
                fmt = "<%d%s" % (n, _SCALARS[et])
                size = struct.calcsize(fmt)
                if pos + size > len(data):
                    raise GgufError(f"{path}: array past the end at byte {pos}")
                v = list(struct.unpack_from(fmt, data, pos))
                pos += size
                return v
            return [value(et) for _ in range(n)]
        raise GgufError(f"{path}: unknown metadata value type {t} at byte {pos}")

    if take("4s") != b"GGUF":
        raise GgufError(f"{path}: not a GGUF file")
    version = take("I")
    if version not in (2, 3):
        raise GgufError(f"{path}: GGUF version {version} (2 or 3 read)")
    n_tensors, n_kv = take("Q"), take("Q")
    meta = {}
    for _ in range(n_kv):
        k = string()
        meta[k] = value(take("I"))
    tensors = []
    for _ in range(n_tensors):
        name = string()
        shape = [take("Q") for _ in range(take("I"))]
        t, off = take("I"), take("Q")
        tensors.append({"name": name, "shape": shape, "type": t, "rel": off})
    align = meta.get("general.alignment", 32)
    base = (pos + align - 1) // align * align
    for x in tensors:
        if x["type"] not in GGML_TYPES:
            raise GgufError(f"{path}: tensor {x['name']}: ggml type {x['type']} not in this script's table")
        tname, blk, bsize = GGML_TYPES[x["type"]]
        n = 1
        for d in x["shape"]:
            n *= d
        if not x["shape"] or x["shape"][0] % blk:
            raise GgufError(f"{path}: tensor {x['name']}: rows of {x['shape'][:1]} are not whole {tname} blocks")
        x.update(type_name=tname, offset=base + x.pop("rel"), nbytes=n // blk * bsize)
        if x["offset"] + x["nbytes"] > len(data):
            raise GgufError(f"{path}: tensor {x['name']} lies past the end of the file")
    return meta, tensors


def compare_tensors(path_a, path_b):
    """Tensor-by-tensor comparison of two GGUF files: a list of rows (name, type_a, type_b, verdict), verdict
    'identical', 'differ: N of M bytes', 'type differs', or 'missing in a/b'."""
    _, ta = read_gguf(path_a)
    _, tb = read_gguf(path_b)
    with open(path_a, "rb") as f:
        da = f.read()
    with open(path_b, "rb") as f:
        db = f.read()
    ia, ib = {t["name"]: t for t in ta}, {t["name"]: t for t in tb}
    rows = []
    for name in sorted(set(ia) | set(ib)):
        a, b = ia.get(name), ib.get(name)
        if a is None or b is None:
            rows.append((name, a and a["type_name"], b and b["type_name"], "missing in " + ("a" if a is None else "b")))
            continue
        if a["type"] != b["type"] or a["shape"] != b["shape"]:
            rows.append((name, a["type_name"], b["type_name"], "type differs"))
            continue
        ba = da[a["offset"]:a["offset"] + a["nbytes"]]
        bb = db[b["offset"]:b["offset"] + b["nbytes"]]
        if ba == bb:
            rows.append((name, a["type_name"], b["type_name"], "identical"))
        else:
            nd = sum(x != y for x, y in zip(ba, bb))
            rows.append((name, a["type_name"], b["type_name"], f"differ: {nd} of {len(ba)} bytes"))
    return rows


def median_ratio(atp_values, peer_values):
    """(median of atp, median of llama.cpp, their ratio): the figure every table cell reports."""
    a, p = statistics.median(atp_values), statistics.median(peer_values)
    return a, p, (a / p if p else float("nan"))


def parse_llama_bench(text):
    """llama-bench -o json: {'pp': tok/s, 'tg': tok/s, 'commit': build_commit} from its list of tests."""
    out = {}
    for test in json.loads(text):
        key = "pp" if test.get("n_gen", 0) == 0 else "tg"
        out[key] = test["avg_ts"]
        out["commit"] = test.get("build_commit")
    return out


def parse_llama_ppl(text):
    """Final perplexity from llama-perplexity's log, or None."""
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", text)
    return float(m.group(1)) if m else None


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr[-2000:]}")
    return p


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atp", required=True, help="atp binary")
    ap.add_argument("--atp-base", help="an earlier atp binary, timed right after --atp in every round (before/after ratios)")
    ap.add_argument("--llama-bin", required=True, help="llama.cpp's bin directory (llama-bench, llama-quantize, ...)")
    ap.add_argument("-m", "--model", default="models/atp-40m", help="model directory or f16 .gguf")
    ap.add_argument("--work", default="/tmp/gguf_peer", help="where the GGUF files go")
    ap.add_argument("--types", nargs="+", default=DEFAULT_TYPES, help="llama-quantize types to write and check")
    ap.add_argument("--bench-types", nargs="*", default=DEFAULT_BENCH, help="of those (and F16), the ones timed")
    ap.add_argument("--compare-types", nargs="*", default=DEFAULT_COMPARE, help="atp convert vs llama-quantize bytes")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="repetitions inside each llama-bench / atp bench run")
    ap.add_argument("--ppl-file", default="../shared/data/valid.txt", help="text for perplexity ('' to skip)")
    ap.add_argument("--max-windows", type=int, default=30, help="atp perplexity windows (C=384, S=128)")
    ap.add_argument("--llama-ppl-chunks", type=int, default=16, help="llama-perplexity chunks of 512 (0: skip)")
    ap.add_argument("--ppl-threads", type=int, default=2)
    ap.add_argument("--json-out", help="write the whole report here")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    lb = lambda tool: os.path.join(a.llama_bin, tool)
    report = {"machine": machine(), "loadavg_start": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "atp_version": run([a.atp, "--version"]).stdout.strip()}
    log = lambda s: print(s, file=sys.stderr, flush=True)

    # 1. Files: f16 by atp, the rest by llama-quantize.
    f16 = a.model if a.model.endswith(".gguf") else os.path.join(a.work, "f16.gguf")
    if f16 != a.model and not os.path.exists(f16):
        run([a.atp, "convert", "-m", a.model, "-o", f16, "--type", "f16"])
    files = {"F16": f16}
    for t in a.types:
        out = os.path.join(a.work, f"lq-{t.lower()}.gguf")
        if not os.path.exists(out):
            log(f"llama-quantize {t}")
            run([lb("llama-quantize"), f16, out, t])
        files[t] = out
    report["files"] = {t: {"path": p, "bytes": os.path.getsize(p),
                           "types": sorted({x["type_name"] for x in read_gguf(p)[1]})} for t, p in files.items()}

    def save():
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump(report, f, indent=1)

    # 2. atp loads each file (greedy, a few tokens).
    for t, p in files.items():
        g = subprocess.run([a.atp, "generate", "-m", p, "--temp", "0", "-n", "8", "-t", str(a.ppl_threads), "-p", "And God said"],
                           capture_output=True, text=True)
        report["files"][t]["atp_loads"] = g.returncode == 0
        report["files"][t]["atp_generate"] = g.stdout.strip()[-200:] if g.returncode == 0 else g.stderr.strip()[-400:]
        log(f"atp generate {t}: {'ok' if g.returncode == 0 else 'FAILED'}")
    save()

    # 3. atp convert vs llama-quantize, from the same f16 values: the f16 file read back to a directory.
    if a.compare_types:
        src = os.path.join(a.work, "f16-dir")
        if not os.path.isdir(src):
            run([a.atp, "convert", "-m", f16, "-o", src])
        report["compare"] = {}
        for t in a.compare_types:
            mine = os.path.join(a.work, f"atp-{t.lower()}.gguf")
            if not os.path.exists(mine):
                run([a.atp, "convert", "-m", src, "-o", mine, "--type", t.lower()])
            rows = compare_tensors(mine, files[t])
            report["compare"][t] = [{"tensor": r[0], "atp": r[1], "llama_quantize": r[2], "verdict": r[3]} for r in rows]
            same = sum(r[3] == "identical" for r in rows)
            log(f"compare {t}: {same} of {len(rows)} tensors identical")
    save()

    # 4. Speed, interleaved.
    speed = {}
    for rnd in range(a.rounds):
        for th in a.threads:
            for t in a.bench_types:
                p = files[t]
                q = run([lb("llama-bench"), "-m", p, "-p", "512", "-n", "128", "-t", str(th), "-r", str(a.repeats), "-o", "json"])
                lj = parse_llama_bench(q.stdout)
                report["llama_commit"] = lj.get("commit")
                j = json.loads(run([a.atp, "bench", "-m", p, "-t", str(th), "--prompt-tokens", "512", "--decode-context", "1",
                                    "--decode-tokens", "128", "--repeats", str(a.repeats), "--json"]).stdout)
                s = speed.setdefault(f"{th}/{t}", {"threads": th, "type": t, "llama_pp": [], "llama_tg": [], "atp_pp": [],
                                                    "atp_tg": [], "atp_tg_median_step": [], "base_pp": [], "base_tg": [],
                                                    "loadavg": []})
                if a.atp_base:
                    jb = json.loads(run([a.atp_base, "bench", "-m", p, "-t", str(th), "--prompt-tokens", "512", "--decode-context",
                                         "1", "--decode-tokens", "128", "--repeats", str(a.repeats), "--json"]).stdout)
                    s["base_pp"].append(jb["prefill_tok_s"])
                    s["base_tg"].append(1000 / jb["decode_ms_per_token_mean"])
                s["llama_pp"].append(lj["pp"])
                s["llama_tg"].append(lj["tg"])
                s["atp_pp"].append(j["prefill_tok_s"])
                s["atp_tg"].append(1000 / j["decode_ms_per_token_mean"])
                s["atp_tg_median_step"].append(j["decode_tok_s"])
                s["loadavg"].append(os.getloadavg()[0])
                log(f"round {rnd} -t {th} {t}: pp512 atp {j['prefill_tok_s']:.0f} llama {lj['pp']:.0f}; "
                    f"tg128 atp {s['atp_tg'][-1]:.0f} llama {lj['tg']:.0f}"
                    + (f" base {s['base_tg'][-1]:.0f}" if a.atp_base else "") + f" tok/s (load {s['loadavg'][-1]:.2f})")
    report["speed"] = list(speed.values())
    save()

    # 5. Perplexity of each file by both (last: the slowest part, and no timing depends on it).
    for t, p in files.items():
        if a.ppl_file and report["files"][t]["atp_loads"]:
            j = json.loads(run([a.atp, "perplexity", "-m", p, "-f", a.ppl_file, "--chunked", "--max-windows", str(a.max_windows),
                                "-t", str(a.ppl_threads), "--json"]).stdout)
            report["files"][t]["atp_ppl"] = j
            log(f"atp perplexity {t}: {j['ppl']:.4f}")
        if a.ppl_file and a.llama_ppl_chunks:
            q = run([lb("llama-perplexity"), "-m", p, "-f", a.ppl_file, "-c", "512", "--chunks", str(a.llama_ppl_chunks),
                     "-t", str(a.ppl_threads)])
            report["files"][t]["llama_ppl"] = parse_llama_ppl(q.stderr + q.stdout)
            report["files"][t]["llama_ppl_log_tail"] = (q.stderr + q.stdout)[-600:]
            log(f"llama-perplexity {t}: {report['files'][t]['llama_ppl']}")
        save()

    # Tokenization: llama.cpp's (from the f16 file's metadata) against atp's reference BPE (tools/bpe.py,
    # which atp's C++ tokenizer is tested against) on the perplexity text.
    if a.ppl_file and os.path.isdir(a.model) and os.path.exists(lb("llama-tokenize")):
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
        import bpe
        with open(a.ppl_file, encoding="utf-8") as f:
            text = f.read()
        ours = bpe.Tokenizer.from_file(a.model).encode(text)
        q = run([lb("llama-tokenize"), "-m", f16, "-f", a.ppl_file, "--ids", "--log-disable", "--no-bos", "--no-escape"])
        theirs = json.loads(q.stdout.strip().splitlines()[-1])
        first = next((i for i, (x, y) in enumerate(zip(ours, theirs)) if x != y), None)
        report["tokenization"] = {"atp_tokens": len(ours), "llama_tokens": len(theirs),
                                  "identical": ours == theirs, "first_difference": first}
        log(f"tokenization: {report['tokenization']}")

    report["loadavg_end"] = os.getloadavg()
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    save()

    # Tables.
    print(f"atp {report['atp_version']}; llama.cpp {report.get('llama_commit')}; {report['machine']['cpu']}, "
          f"{report['machine']['cores']} cores; load average {report['loadavg_start'][0]:.2f} at start, "
          f"{report['loadavg_end'][0]:.2f} at end")
    if speed:
        base = " tg128 atp-base | base / llama.cpp | atp / base |" if a.atp_base else ""
        print("\n| threads | file | pp512 atp | pp512 llama.cpp | atp / llama.cpp | tg128 atp | tg128 llama.cpp | atp / llama.cpp |"
              + base)
        print("|---|---|---|---|---|---|---|---|" + "---|---|---|" * bool(a.atp_base))
        for s in speed.values():
            pa, pl, pr = median_ratio(s["atp_pp"], s["llama_pp"])
            ta, tl, tr = median_ratio(s["atp_tg"], s["llama_tg"])
            row = f"| {s['threads']} | {s['type']} | {pa:.0f} | {pl:.0f} | {pr:.2f} | {ta:.0f} | {tl:.0f} | {tr:.2f} |"
            if a.atp_base:
                tb, _, br = median_ratio(s["base_tg"], s["llama_tg"])
                row += f" {tb:.0f} | {br:.2f} | {ta / tb:.2f} |"
            print(row)
    if "tokenization" in report:
        tk = report["tokenization"]
        print(f"\ntokenization of --ppl-file: atp {tk['atp_tokens']} tokens, llama.cpp {tk['llama_tokens']}, "
              f"{'identical' if tk['identical'] else 'different from token ' + str(tk['first_difference'])}")
    f16_atp = report["files"]["F16"].get("atp_ppl", {}).get("ppl")
    f16_ll = report["files"]["F16"].get("llama_ppl")
    print("\n| file (llama-quantize) | MB | tensor types | atp loads | atp ppl | vs f16 | llama-perplexity | vs f16 |")
    print("|---|---|---|---|---|---|---|---|")
    for t, r in report["files"].items():
        ap_ = r.get("atp_ppl", {}).get("ppl")
        lp = r.get("llama_ppl")
        rel = lambda v, b: f"{100 * (v / b - 1):+.2f}%" if v and b else ""
        num = lambda v: f"{v:.4f}" if v else ""
        print(f"| {t} | {r['bytes'] / 1e6:.1f} | {' '.join(r['types'])} | {'yes' if r['atp_loads'] else 'NO'} | "
              f"{num(ap_)} | {rel(ap_, f16_atp)} | {num(lp)} | {rel(lp, f16_ll)} |")
    for t, rows in report.get("compare", {}).items():
        same = sum(r["verdict"] == "identical" for r in rows)
        print(f"\natp convert --type {t.lower()} vs llama-quantize {t}: {same} of {len(rows)} tensors identical")
        for r in rows:
            if r["verdict"] != "identical":
                print(f"  {r['tensor']}: atp {r['atp']}, llama-quantize {r['llama_quantize']}: {r['verdict']}")


if __name__ == "__main__":
    main()
