#!/usr/bin/env python3
"""Regenerates the tables of docs/results.md from the commands in docs/results/manifest.json.

  scripts/results.py run [TABLE ...] [--only RUN ...]  run the commands, write docs/results/TABLE.json, re-render
                                                      (no TABLE: every quality table; a measurement table runs
                                                      only when named; a device table only prints its command)
  scripts/results.py render                           rewrite docs/results.md's tables from the committed JSON
  scripts/results.py check ci                         rerun the manifest's cheap 'ci' commands and compare their
                                                      figures with the committed JSON; also check that every
                                                      table in docs/results.md is what its JSON renders to
  scripts/results.py list                             the tables, their kinds and commits

Each table of docs/results.md has a manifest entry of one of three kinds:
  quality      deterministic CPU figures (perplexity, retrieval, bytes, ranks): the script writes the whole
               table from its runs' JSON; `check ci` reruns the entry's 'ci' slice and compares.
  measurement  timings of this machine (they move with its load): the script writes the line above the table
               that says when, where and at which load it was measured and the commands that re-measure it;
               `run TABLE` re-measures and keeps the output in the JSON; never compared.
  device       GPU figures: as a measurement, but the commands run on the GPU machine through
               bench/cuda_device.sh; `run TABLE` prints them and runs nothing here.

A table's generated text sits in docs/results.md between `<!-- results:TABLE -->` and
`<!-- /results:TABLE -->`. Each run's JSON holds atp's own `--json` output, the command line, the date,
the load average before and after, `atp --version` and the commit of the engine that made it
(`git rev-parse --short HEAD`, with `-dirty` when src/ or CMakeLists.txt had uncommitted changes).

Exit status of `check`: 0 all figures came out again, 1 a figure did not (named: table, run, policy,
field, expected, got), 77 ../shared is absent (ctest's SKIP_RETURN_CODE).

Standard library only.
"""
import argparse
import datetime
import json
import os
import re
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
EXACT_FIELDS = ("windows", "scored_tokens", "cases", "correct", "kv_bytes_per_token", "retrieval_kv_bytes_per_token",
                "input_rank_90", "input_rank_99", "key_rank_90", "key_rank_99")
PPL_REL_TOL = 1e-5


def kind_of(table):
    return table.get("kind", "quality")


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
    """The manifest's command with POLICIES expanded (the displayed form keeps BIN, OUT and WORK)."""
    policies = " ".join("--kv " + p for p in table.get("policies", []))
    return command.replace("POLICIES", policies)


def substitute(text, atp, out, work):
    """BIN, OUT and WORK (whole words) replaced by the binary, the scratch output and the table's work directory."""
    for key, value in (("BIN", atp), ("OUT", out), ("WORK", work)):
        if value is not None:
            text = re.sub(r"\b%s\b" % key, lambda _: value, text)
    return text


def argv_of(command, atp, out, work=None):
    return [substitute(a, atp, out, work) for a in shlex.split(command)]


def run_atp(command, atp, work=None):
    """Runs one atp command (in the repository root, as the doc states them); returns atp's JSON and seconds."""
    with tempfile.TemporaryDirectory(prefix="atp-results-") as out:
        argv = argv_of(command, atp, out, work)
        t0 = time.monotonic()
        p = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("results.py: %s failed (exit %d):\n%s" % (" ".join(argv), p.returncode, p.stderr[-2000:]))
    try:
        return json.loads(p.stdout), wall
    except json.JSONDecodeError as e:
        sys.exit("results.py: %s printed no JSON (%s)" % (" ".join(argv), e))


def run_shell(command, atp, work):
    """Runs one measurement command line with bash (BIN and WORK replaced); returns its output and seconds.

    The output is atp's JSON where stdout is one object, a list where every line is one (bench scripts print
    JSON lines), else the last 20,000 characters of stdout."""
    line = substitute(command, shlex.quote(atp), None, shlex.quote(work))
    t0 = time.monotonic()
    p = subprocess.run(["bash", "-c", line], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("results.py: %s failed (exit %d):\n%s" % (line, p.returncode, p.stderr[-2000:]))
    try:
        return json.loads(p.stdout), wall
    except json.JSONDecodeError:
        pass
    try:
        return [json.loads(l) for l in p.stdout.splitlines() if l.strip()], wall
    except json.JSONDecodeError:
        return p.stdout[-20000:], wall


def atp_version(atp):
    p = subprocess.run([atp, "--version"], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else "unknown"


def machine():
    """The CPU's model name and core count (atp's eval and bench JSON say it themselves; perplexity and analyze do not)."""
    name = "?"
    try:
        with open("/proc/cpuinfo") as f:
            name = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), name)
    except OSError:
        pass
    return "%s, %d cores" % (name, os.cpu_count() or 0)


def load_average():
    return [round(x, 2) for x in os.getloadavg()]


def prepare(table, atp, work):
    """Runs a table's 'prepare' commands (files its runs read, e.g. converted GGUF files) in WORK; returns
    the sizes in bytes of the files they left there (deterministic: a table may print them)."""
    for command in table.get("prepare", []):
        argv = argv_of(command, atp, work, work)
        print("results.py: prepare: %s" % command, file=sys.stderr, flush=True)
        p = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            sys.exit("results.py: %s failed (exit %d):\n%s" % (" ".join(argv), p.returncode, p.stderr[-2000:]))
    return {f: os.path.getsize(os.path.join(work, f)) for f in sorted(os.listdir(work))}


def cmd_run(args):
    manifest = load_manifest()["tables"]
    names = args.tables or [n for n, t in manifest.items() if kind_of(t) == "quality"]
    for name in names:
        if name not in manifest:
            sys.exit("results.py: no table %r in %s (tables: %s)" % (name, MANIFEST, ", ".join(manifest)))
    for name in names:
        table = manifest[name]
        if kind_of(table) == "device":
            print("results.py: %s is measured on the GPU machine; run there:\n  %s" % (
                name, "\n  ".join(table["runs"].values())), file=sys.stderr)
            continue
        path = table_json_path(name)
        with tempfile.TemporaryDirectory(prefix="atp-results-work-") as work:
            files = prepare(table, args.atp, work)
            for run_id, command in table["runs"].items():
                if args.only and run_id not in args.only:
                    continue
                command = expand(command, table)
                print("results.py: %s/%s: %s" % (name, run_id, command), file=sys.stderr, flush=True)
                load_before = load_average()
                if kind_of(table) == "measurement":
                    output, wall = run_shell(command, args.atp, work)
                else:
                    output, wall = run_atp(command, args.atp, work)
                # read again just before writing: another run of this script may have stored another run meanwhile
                saved = json.load(open(path)) if os.path.exists(path) else {"table": name, "runs": {}}
                saved["runs"][run_id] = {
                    "command": command,
                    "commit": engine_commit(),
                    "atp_version": atp_version(args.atp),
                    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                    "wall_s": round(wall, 1),
                    "load_average": [load_before, load_average()],
                    "machine": machine(),
                    "output": output,
                }
                if files:
                    saved["runs"][run_id]["work_files"] = files
                with open(path, "w") as f:  # after every run, so a long table keeps what it has
                    json.dump(saved, f, indent=1, sort_keys=True)
                    f.write("\n")
    render_doc(write=True)


def cmd_list(args):
    for name, table in load_manifest()["tables"].items():
        path = table_json_path(name)
        commits = []
        if os.path.exists(path):
            commits = sorted({r["commit"] for r in json.load(open(path))["runs"].values()})
        elif "measured" in table:
            commits = [table["measured"]["commit"]]
        print("%-22s %-12s %s" % (name, kind_of(table), ", ".join(commits) or "-"))


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


def load_text(run):
    load = run.get("load_average")
    return ", load average %.1f -> %.1f" % (load[0][0], load[1][0]) if load else ""


def provenance(saved, run_ids):
    parts = []
    for run_id in run_ids:
        run = saved["runs"].get(run_id)
        if run:
            o = run["output"]
            threads = o.get("threads") or next((a for f, a in zip(run["command"].split(), run["command"].split()[1:])
                                                if f in ("-t", "--threads")), "?")
            parts.append("`%s`: %s, %s, %s threads, %.0f s%s" % (run_id, run["date"], o.get("machine") or run.get("machine", "?"),
                                                                    threads, run["wall_s"], load_text(run)))
    return "Runs (`docs/results/%s.json`): " % saved["table"] + "; ".join(parts) + "."


def retrieval_text(r):
    return "%d/%d" % (r["correct"], r["cases"]) if r and r.get("cases") else "-"


def render_sweep(name, table, saved):
    """One eval run, one row per policy; the retrieval and speed columns only where the run measured them."""
    run = saved["runs"]["main"]
    rows = run["output"]["results"]
    dense = next(r for r in rows if r["policy"] == "dense")
    columns = [("method", lambda r: r["method"]), ("budget", lambda r: r["budget"]),
               ("policy string", lambda r: "`%s`" % r["policy"]), ("perplexity", lambda r: "%.2f" % r["ppl"]),
               ("vs dense", lambda r: pct(r["ppl"], dense["ppl"])),
               ("KV bytes/token", lambda r: "%.0f" % r["kv_bytes_per_token"]),
               ("relative to dense", lambda r: "%.3f" % r["kv_ratio"])]
    if any(r.get("cases") for r in rows):
        columns.append(("retrieval", retrieval_text))
    if any(r.get("decode_tok_s") is not None for r in rows):
        columns += [("decode tok/s", lambda r: "%.0f" % r["decode_tok_s"] if r.get("decode_tok_s") is not None else "-"),
                    ("attention ms/token", lambda r: "%.3f" % r["attention_ms_per_token"]
                     if r.get("attention_ms_per_token") is not None else "-")]
    columns.append(("commit", lambda r: commits_of(run)))
    out = [commands_block(table, saved, ["main"]), "", provenance(saved, ["main"]), "",
           "| " + " | ".join(c[0] for c in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(c[1](r) for c in columns) + " |")
    return "\n".join(out)


def render_checks(name, table, saved):
    """Single figures against references measured elsewhere: each manifest row names its run and figure
    ('ppl' of `atp perplexity`, or 'retrieval' of a policy in an eval run) and the reference's text."""
    ids = list(table["runs"])
    out = [commands_block(table, saved, ids), "", provenance(saved, ids), "",
           "| %s | engine (`atp`) | %s | commit |" % (table.get("what", "metric"), table.get("reference", "reference")),
           "|---|---|---|---|"]
    for row in table["rows"]:
        run = saved["runs"].get(row["run"])
        if not run:
            figure = "-"
        elif row["figure"] == "ppl":
            o = run["output"]
            figure = "**%.*f** (%d windows, %s scored tokens)" % (row.get("digits", 3), o["ppl"], o["windows"],
                                                                   format(o["scored_tokens"], ","))
        else:
            figure = "**%s**" % retrieval_text(row_by_policy(run)[row.get("policy", "dense")])
        out.append("| %s | %s | %s | %s |" % (row["what"], figure, row["reference_value"], commits_of(run)))
    return "\n".join(out)


def ranks(layers, key):
    return ", ".join("%d/%d" % (l[key + "_rank_90"], l[key + "_rank_99"]) for l in layers)


def render_spectra(name, table, saved):
    """`atp analyze` runs, one row per model: ranks for 90% / 99% of the energy, per layer."""
    ids = list(table["runs"])
    out = [commands_block(table, saved, ids), "", provenance(saved, ids), "",
           "| model | rank for 90% / 99% of the energy of X (window tokens x d_model), per layer "
           "| same for post-RoPE keys (per KV head) | commit |", "|---|---|---|---|"]
    for run_id in ids:
        run = saved["runs"].get(run_id)
        if run:
            layers = run["output"]["layers"]
            out.append("| %s | %s | %s | %s |" % (run_id, ranks(layers, "input"), ranks(layers, "key"), commits_of(run)))
    return "\n".join(out)


def render_files(name, table, saved):
    """`atp perplexity` of one model in several files made by the table's 'prepare' commands, one row per run,
    each against the first run (with the target the manifest states, if any)."""
    ids = list(table["runs"])
    base = saved["runs"].get(ids[0])
    targets = table.get("targets", {})
    out = [commands_block(table, saved, ids), "", provenance(saved, ids), "",
           "| file | size | perplexity | vs %s | target | commit |" % ids[0], "|---|---|---|---|---|---|"]
    for run_id in ids:
        run = saved["runs"].get(run_id)
        if not run:
            continue
        size = run.get("work_files", {}).get(table["files"][run_id])
        ppl = run["output"]["ppl"]
        vs = "" if run_id == ids[0] else "**%+.*f%%**" % (3 if abs(ppl / base["output"]["ppl"] - 1) < 1e-3 else 2,
                                                        100.0 * (ppl / base["output"]["ppl"] - 1.0))
        out.append("| %s | %s | %.4f | %s | %s | %s |" % (run_id, "%.1f MB" % (size / 1e6) if size else "-", ppl, vs,
                                                          targets.get(run_id, ""), commits_of(run)))
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
            retr.append(retrieval_text(r))
        used = [runs[i] for i in ids if rows[i].get(p)]
        out.append("| `%s` | %s | %s | %s | %s |" % (p, " | ".join(ppl), " / ".join(ratio), " | ".join(retr),
                                                        commits_of(*used)))
    return "\n".join(out)


def render_measured(name, table, saved):
    """The line above a measured table: when, where and at which load, and how to measure it again."""
    m = table["measured"]
    commands = "```\n" + "\n".join(c.replace("BIN", "build/atp") for c in table["runs"].values()) + "\n```"
    if kind_of(table) == "device":
        # "here": what is prepared on this machine first (default: the CUDA build that cuda_device.sh packs).
        here = table.get("here", "build with `-DATP_CUDA=ON -DATP_NATIVE=OFF` into `build-cuda`, "
                                 "`bench/cuda_device.sh pack build-cuda`")
        head = ("*GPU figures, measured once at `%s` (%s) on %s; not compared by `results_check`. To measure them "
                "again: %s here, then on the GPU machine (`scripts/results.py run %s` prints these and runs nothing "
                "here):*" % (m["commit"], m["date"], m["machine"], here, name))
    else:
        head = ("*Timings, measured once at `%s` (%s) on %s, %s; not compared by `results_check` (they move with "
                "the machine's load). Reproducible with `scripts/results.py run %s`, which runs (`WORK`: a scratch "
                "directory):*"
                % (m["commit"], m["date"], m["machine"], m["load"], name))
    out = [head, commands]
    if saved:
        last = max(saved["runs"].values(), key=lambda r: r["date"])
        out.append("")
        out.append("*Last re-measured %s at `%s`%s: `docs/results/%s.json`.*" % (last["date"], last["commit"],
                                                                                load_text(last), name))
    return "\n".join(out)


RENDERERS = {"sweep": render_sweep, "lengths": render_lengths, "checks": render_checks, "spectra": render_spectra,
             "files": render_files}


def rendered_tables():
    manifest = load_manifest()["tables"]
    result = {}
    for name, table in manifest.items():
        path = table_json_path(name)
        saved = json.load(open(path)) if os.path.exists(path) else None
        if kind_of(table) != "quality":
            result[name] = render_measured(name, table, saved)
        elif saved:
            result[name] = RENDERERS[table["render"]](name, table, saved)
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
    errors = ["docs/results.md table %s is not what docs/results/%s.json and the manifest render to (run "
              "scripts/results.py render)" % (n, n) for n in render_doc(write=False)]
    manifest = load_manifest()["tables"]
    errors += ["quality table %s has no docs/results/%s.json (scripts/results.py run %s)" % (n, n, n)
               for n, t in manifest.items() if kind_of(t) == "quality" and not os.path.exists(table_json_path(n))]
    checked = identical = 0
    for name, table in manifest.items():
        for ci in table.get("ci", []):
            if not os.path.exists(table_json_path(name)):
                errors.append("table %s has a ci slice but no docs/results/%s.json (scripts/results.py run %s)"
                              % (name, name, name))
                continue
            saved = json.load(open(table_json_path(name)))
            # rows of eval's JSON are keyed by policy; a ci entry may name another list and key (analyze: layers, layer)
            rows, key = ci.get("rows", "results"), ci.get("key", "policy")
            committed = {r[key]: r for r in saved["runs"][ci["run"]]["output"][rows]}
            output, wall = run_atp(ci["command"], args.atp)
            print("results.py: %s/%s: %d rows in %.1f s" % (name, ci["run"], len(output[rows]), wall),
                  file=sys.stderr)
            for r in output[rows]:
                where = "table %s, run %s, %s %s:" % (name, ci["run"], key, r[key])
                if r[key] not in committed:
                    errors.append("%s not in the committed JSON" % where)
                    continue
                errors += compare(where, committed[r[key]], r, ci["fields"])
                checked += 1
                identical += all(committed[r[key]].get(f) == r.get(f) for f in ci["fields"])
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
    sub.add_parser("list", help="the tables, their kinds and the commits of their runs")
    args = ap.parse_args()
    args.atp = os.path.abspath(args.atp)
    return {"run": cmd_run, "render": cmd_render, "check": cmd_check, "list": cmd_list}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
