#!/usr/bin/env python3
"""Checks that no folder of src/ includes a folder above it (docs/architecture.md, "Layers").

  scripts/check_layers.py [--src DIR]     DIR defaults to the checkout's src/

Every `#include "FOLDER/..."` in src/FOLDER2/ must name FOLDER2 itself or a folder of a lower level in
LEVELS. Folders of one level are peers and include neither each other nor anything of their own level.
A folder of src/ missing from LEVELS, or an include naming one, is an error too: a new folder gets its
place in the table before it is used. Includes of the standard library and of other libraries (<...>)
and of a file beside the includer ("x.h", no folder) are not layers and are skipped.

Exit status: 0 every include goes down (or stays in its folder), 1 a violation (each printed as
FILE:LINE: what it includes and the two levels), 2 DIR is not a directory.

Standard library only.
"""
import argparse
import os
import re
import sys

# Lowest first. Why each folder sits where it does:
# - core: status, dtypes, tensors, mmap, threads; includes nothing of ours.
# - kernels (CPU math), tokenizer (text <-> ids) and format (safetensors, GGUF, basis files: bytes on
#   disk <-> named tensors and metadata) each need only core, and nothing above may be needed by them.
#   So does sampling (token choice: SamplingParams, the rules in sampling/rules.h, the host's
#   implementation): model's backends answer token queries with it, and both engine (which asks) and
#   cuda (whose kernels compile the same rules) sit above model, so it goes below both.
# - kv: the KvPolicy interface and the policies; kernels for attention, format for basis files.
# - model: config, weights, the Llama forward pass; hands each layer's attention to a kv policy.
# - engine (sequences, sampler, scheduler, KV pool) drives model and kv; cuda is a backend of model
#   and kv (it implements LlamaModel's backend and the kv policies on the GPU) and needs nothing of
#   engine. They are peers: the caller that knows --device (cli today) pairs them, so engine stays
#   free of #if ATP_CUDA.
# - eval (perplexity, sweeps, calibration) and server (HTTP API) run the engine; neither needs the other.
# - cli: the `atp` command over everything.
LEVELS = [
    ["core"],
    ["kernels", "tokenizer", "format", "sampling"],
    ["kv"],
    ["model"],
    ["engine", "cuda"],
    ["eval", "server"],
    ["cli"],
]
SOURCE_EXTENSIONS = (".h", ".hpp", ".cpp", ".cc", ".cu", ".cuh", ".inc", ".in")
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')


def level_of():
    return {folder: i for i, folders in enumerate(LEVELS) for folder in folders}


def describe_order():
    return " < ".join("|".join(folders) for folders in LEVELS)


def check(src):
    """Returns (violations, files, includes): one line per violation, FILE:LINE: message."""
    levels = level_of()
    violations, files, includes = [], 0, 0
    for folder in sorted(os.listdir(src)):
        top = os.path.join(src, folder)
        if not os.path.isdir(top):
            continue
        if folder not in levels:
            violations.append("%s: folder '%s' has no level in LEVELS (scripts/check_layers.py): place it in "
                              "the table (%s)" % (top, folder, describe_order()))
            continue
        for dirpath, _, names in os.walk(top):
            for name in sorted(names):
                if not name.endswith(SOURCE_EXTENSIONS):
                    continue
                path = os.path.join(dirpath, name)
                files += 1
                with open(path, encoding="utf-8", errors="replace") as f:
                    for lineno, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m or "/" not in m.group(1):
                            continue
                        includes += 1
                        target = m.group(1).split("/", 1)[0]
                        where = "%s:%d: %s includes %s" % (path, lineno, folder, m.group(1))
                        if target == folder:
                            continue
                        if target not in levels:
                            violations.append("%s: '%s' is not a folder with a level in LEVELS" % (where, target))
                        elif levels[target] == levels[folder]:
                            violations.append("%s: %s and %s are peers (level %d), neither includes the other (%s)"
                                              % (where, folder, target, levels[folder], describe_order()))
                        elif levels[target] > levels[folder]:
                            violations.append("%s: %s (level %d) is above %s (level %d) (%s)"
                                              % (where, target, levels[target], folder, levels[folder], describe_order()))
    return violations, files, includes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
    args = ap.parse_args(argv)
    if not os.path.isdir(args.src):
        print("check_layers: %s is not a directory" % args.src, file=sys.stderr)
        return 2
    violations, files, includes = check(args.src)
    for v in violations:
        print(v)
    if violations:
        print("check_layers: %d violation(s) in %s" % (len(violations), args.src), file=sys.stderr)
        return 1
    print("check_layers: %d files, %d includes of our folders, every one going down: %s"
          % (files, includes, describe_order()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
