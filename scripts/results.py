#!/usr/bin/env python3
"""Regenerates the tables of docs/results.md from the commands in docs/results/manifest.json.

  scripts/results.py run [TABLE ...] [--only RUN ...]  run the commands, write docs/results/TABLE.json, re-render
  scripts/results.py render                           rewrite docs/results.md's tables from the committed JSON
  scripts/results.py check ci                         rerun the manifest's cheap 'ci' commands and compare their
                                                      figures with the committed JSON; also check that every
                                                      table in docs/results.md is what its JSON renders to

A table sits in docs/results.md between `<!-- results:TABLE -->` and `<!-- /results:TABLE -->`; everything
between the markers (the commands and the table) is written by this script. Each run's JSON holds atp's
own `--json` output, the command line, the date, `atp --version` and the commit of the engine that made it
(`git rev-parse --short HEAD`, with `-dirty` when src/ or CMakeLists.txt had uncommitted changes).

Exit status of `check`: 0 all figures came out again, 1 a figure did not (named: table, run, policy,
field, expected, got), 77 ../shared is absent (ctest's SKIP_RETURN_CODE).

Standard library only.
"""
import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(ROOT, "docs", "results", "manifest.json")
DOC = os.path.join(ROOT, "docs", "results.md")
SKIP = 77

# Figures `check` compares, and how. The engine repeats itself bit for bit for one machine, build and
# thread count (the commands fix -t), so counts and byte averages must match exactly. Perplexity gets a
# relative 1e-5: a different summation order (another thread count, compiler or BLAS) moved it by up to
# 1.1e-6 (snapkv:budget=128+mx:fmt=fp8_e4m3 on ref-5m, -t 1 against -t 2: quantization codes and eviction
# choices turn last-bit differences into small real ones; dense moved 2e-10), while the tables print
# 4-5 significant digits, so any change they can show (5e-5 relative and coarser) fails the check.
EXACT_FIELDS = ("windows", "scored_tokens", "cases", "correct", "kv_bytes_per_token", "retrieval_kv_bytes_per_token")
PPL_REL_TOL = 1e-5


def load_manifest():
    with open(MANIFEST) as f:
        return json.load(f)


def table_json_path(name):
    return os.path.join(ROOT, "docs", "results", name + ".json")


def engine_commit():
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "CMakeLists.txt"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + ("-dirty" if dirty else "")


def expand(command, table):
    """The manifest's command with POLICIES expanded (the displayed form keeps BIN and OUT)."""
    policies = " ".join("--kv " + p for p in table.get("policies", []))
    return command.replace("POLICIES", policies)


def argv_of(command, atp, out):
    return [atp if a == "BIN" else out if a == "OUT" else a for a in shlex.split(command)]


def run_atp(command, atp):
    """Runs one command (in the repository root, as the doc states them); returns atp's JSON and seconds."""
    with tempfile.TemporaryDirectory(prefix="atp-results-") as out:
        argv = argv_of(command, atp, out)
        t0 = time.monotonic()
        p = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("results.py: %s failed (exit %d):\n%s" % (" ".join(argv), p.returncode, p.stderr[-2000:]))
    try:
        return json.loads(p.stdout), wall
    except json.JSONDecodeError as e:
        sys.exit("results.py: %s printed no JSON (%s)" % (" ".join(argv), e))


def atp_version(atp):
    p = subprocess.run([atp, "--version"], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else "unknown"


def cmd_run(args):
    manifest = load_manifest()["tables"]
    names = args.tables or list(manifest)
    for name in names:
        if name not in manifest:
            sys.exit("results.py: no table %r in %s (tables: %s)" % (name, MANIFEST, ", ".join(manifest)))
    for name in names:
        table = manifest[name]
        path = table_json_path(name)
        for run_id, command in table["runs"].items():
            if args.only and run_id not in args.only:
                continue
            command = expand(command, table)
            print("results.py: %s/%s: %s" % (name, run_id, command), file=sys.stderr, flush=True)
            output, wall = run_atp(command, args.atp)
            # read again just before writing: another run of this script may have stored another run meanwhile
            saved = json.load(open(path)) if os.path.exists(path) else {"table": name, "runs": {}}
            saved["runs"][run_id] = {
                "command": command,
                "commit": engine_commit(),
                "atp_version": atp_version(args.atp),
                "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "wall_s": round(wall, 1),
                "output": output,
            }
            with open(path, "w") as f:  # after every run, so a long table keeps what it has
                json.dump(saved, f, indent=1, sort_keys=True)
                f.write("\n")
    render_doc(write=True)


# ---------------------------------------------------------------- rendering


def row_by_policy(run):
    return {r["policy"]: r for r in run["output"]["results"]}


def pct(ppl, base):
    return "%+.1f%%" % (100.0 * (ppl / base - 1.0))


def commits_of(*runs):
    seen = []
    for r in runs:
        if r and r["commit"] not in seen:
            seen.append(r["commit"])
    return ", ".join("`%s`" % c for c in seen)


def commands_block(table, saved, run_ids):
    lines = []
    for run_id in run_ids:
        run = saved["runs"].get(run_id)
        if run:
            lines.append(run["command"].replace("BIN", "build/atp"))
    return "```\n" + "\n".join(lines) + "\n```"


def provenance(saved, run_ids):
    parts = []
    for run_id in run_ids:
        run = saved["runs"].get(run_id)
        if run:
            o = run["output"]
            parts.append("`%s`: %s, %s, %s threads, %.0f s" % (run_id, run["date"], o.get("machine", "?"),
                                                                  o.get("threads", "?"), run["wall_s"]))
    return "Runs (`docs/results/%s.json`): " % saved["table"] + "; ".join(parts) + "."


def render_sweep(name, table, saved):
    run = saved["runs"]["main"]
    rows = run["output"]["results"]
    dense = next(r for r in rows if r["policy"] == "dense")
    out = [commands_block(table, saved, ["main"]), "", provenance(saved, ["main"]), "",
           "| method | budget | policy string | perplexity | vs dense | KV bytes/token | relative to dense | retrieval "
           "| decode tok/s | attention ms/token | commit |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        retrieval = "%d/%d" % (r["correct"], r["cases"]) if r.get("cases") else "-"
        speed = "%.0f" % r["decode_tok_s"] if r.get("decode_tok_s") is not None else "-"
        attn = "%.3f" % r["attention_ms_per_token"] if r.get("attention_ms_per_token") is not None else "-"
        out.append("| %s | %s | `%s` | %.2f | %s | %.0f | %.3f | %s | %s | %s | %s |" % (
            r["method"], r["budget"], r["policy"], r["ppl"], pct(r["ppl"], dense["ppl"]), r["kv_bytes_per_token"],
            r["kv_ratio"], retrieval, speed, attn, commits_of(run)))
    return "\n".join(out)


def render_lengths(name, table, saved):
    ids = ["512", "1024", "2048", "long"]
    runs = {i: saved["runs"].get(i) for i in ids}
    rows = {i: row_by_policy(r) if r else {} for i, r in runs.items()}
    out = [commands_block(table, saved, ids), "", provenance(saved, ids), "",
           "| policy | ppl, 512 | ppl, 1024 | ppl, 2048 | KV bytes / dense at 512 / 1024 / 2048 "
           "| retrieval, short (<= 480 tokens) | retrieval, long (~1.6k tokens) | commit |",
           "|---|---|---|---|---|---|---|---|"]
    for p in table["policies"]:
        ppl, ratio = [], []
        for i in ids[:3]:
            r, d = rows[i].get(p), rows[i].get("dense")
            ppl.append("%.2f (%s)" % (r["ppl"], pct(r["ppl"], d["ppl"])) if r and d and r.get("ppl") else "-")
            ratio.append("%.3f" % r["kv_ratio"] if r else "-")
        retr = []
        for i in ("512", "long"):
            r = rows[i].get(p)
            retr.append("%d/%d" % (r["correct"], r["cases"]) if r and r.get("cases") else "-")
        used = [runs[i] for i in ids if rows[i].get(p)]
        out.append("| `%s` | %s | %s | %s | %s |" % (p, " | ".join(ppl), " / ".join(ratio), " | ".join(retr),
                                                        commits_of(*used)))
    return "\n".join(out)


RENDERERS = {"sweep": render_sweep, "lengths": render_lengths}


def rendered_tables():
    manifest = load_manifest()["tables"]
    result = {}
    for name, table in manifest.items():
        path = table_json_path(name)
        if os.path.exists(path):
            result[name] = RENDERERS[table["render"]](name, table, json.load(open(path)))
    return result


def replace_between(text, name, body):
    begin, end = "<!-- results:%s -->" % name, "<!-- /results:%s -->" % name
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        return None
    return text[:i + len(begin)] + "\n" + body + "\n" + text[j:]


def render_doc(write):
    """Returns the names of tables whose text in docs/results.md differs from their JSON's rendering."""
    with open(DOC) as f:
        text = f.read()
    stale = []
    for name, body in rendered_tables().items():
        new = replace_between(text, name, body)
        if new is None:
            sys.exit("results.py: docs/results.md has no <!-- results:%s --> ... <!-- /results:%s --> markers" % (name, name))
        if new != text:
            stale.append(name)
        text = new
    if write:
        with open(DOC, "w") as f:
            f.write(text)
    return stale


def cmd_render(args):
    render_doc(write=True)


# ---------------------------------------------------------------- check


def compare(where, want, got, fields=EXACT_FIELDS + ("ppl",)):
    """Mismatch messages for `fields` of one row (fields absent or null in either are not compared)."""
    errors = []
    for field in fields:
        a, b = want.get(field), got.get(field)
        if a is None or b is None:
            continue
        if field == "ppl":
            ok = abs(a - b) <= PPL_REL_TOL * abs(a)
        else:
            ok = a == b
        if not ok:
            errors.append("%s field %s: committed %r, got %r" % (where, field, a, b))
    return errors


def cmd_check(args):
    if args.slice != "ci":
        sys.exit("results.py: unknown slice %r (known: ci)" % args.slice)
    shared = os.path.join(ROOT, "..", "shared", "data", "valid.txt")
    if not os.path.exists(shared):
        print("results.py: SKIP: ../shared (the reference models and data) is absent", file=sys.stderr)
        return SKIP
    errors = ["docs/results.md table %s is not what docs/results/%s.json renders to (run scripts/results.py render)"
              % (n, n) for n in render_doc(write=False)]
    manifest = load_manifest()["tables"]
    checked = identical = 0
    for name, table in manifest.items():
        for ci in table.get("ci", []):
            if not os.path.exists(table_json_path(name)):
                errors.append("table %s has a ci slice but no docs/results/%s.json (scripts/results.py run %s)"
                              % (name, name, name))
                continue
            saved = json.load(open(table_json_path(name)))
            committed = row_by_policy(saved["runs"][ci["run"]])
            output, wall = run_atp(ci["command"], args.atp)
            print("results.py: %s/%s: %d rows in %.1f s" % (name, ci["run"], len(output["results"]), wall),
                  file=sys.stderr)
            for r in output["results"]:
                where = "table %s, run %s, policy %s:" % (name, ci["run"], r["policy"])
                if r["policy"] not in committed:
                    errors.append("%s not in the committed JSON" % where)
                    continue
                errors += compare(where, committed[r["policy"]], r, ci["fields"])
                checked += 1
                identical += all(committed[r["policy"]].get(f) == r.get(f) for f in ci["fields"])
    for e in errors:
        print("results.py: MISMATCH " + e, file=sys.stderr)
    if errors:
        return 1
    print("results.py: %d rows came out as committed (%d bit for bit); docs/results.md matches its JSON"
          % (checked, identical), file=sys.stderr)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--atp", default=os.path.join(ROOT, "build", "atp"), help="the atp binary (default build/atp)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the commands of TABLE (default: all) and re-render")
    r.add_argument("tables", nargs="*")
    r.add_argument("--only", nargs="*", help="only these run ids of the table(s)")
    sub.add_parser("render", help="rewrite docs/results.md's tables from the committed JSON")
    c = sub.add_parser("check", help="rerun a slice and compare with the committed figures")
    c.add_argument("slice")
    args = ap.parse_args()
    args.atp = os.path.abspath(args.atp)
    return {"run": cmd_run, "render": cmd_render, "check": cmd_check}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
