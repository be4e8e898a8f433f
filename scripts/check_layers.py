#!/usr/bin/env python3
"""check_layers.py: fails when a folder of src/ includes a folder above it.

The layers (docs/architecture.md), lowest first:

    core  <  image, nn  <  detect, align, embed  <  train  <  pipeline  <  cli, server
    core  <  search  <  server        (search is its own library, on core only)

A file may include its own folder and any folder on a lower layer; never a
folder on its own layer (siblings stay independent) or above.  The programs
(cli, server) talk to the library through include/faceverify.h only: they
may include their own folder, the public header, and the search library
(the server's index, the CLI's `cluster` command).  The few exceptions are listed in EXCEPTIONS with why; an
exception that no longer occurs is reported so the list cannot go stale.

Includes have one spelling: "module/file.h" relative to src/ (the build
puts only src/ and include/ on the include path), and "faceverify.h" for
the public header; a bare "file.h" that names a header under src/ is
reported.  Includes that resolve to no file in the repo (system headers in
quotes, fuzz/'s own header) are ignored.

Exit 0 when clean; 1 with one "file:line: X includes Y (layer ...)" line
per violation.  Usage: scripts/check_layers.py [repo root]
"""
import os
import re
import sys

LAYER = {
    "core": 0,
    "image": 1,
    "nn": 1,
    "decide": 1,
    "search": 1,
    "detect": 2,
    "align": 2,
    "embed": 2,
    "train": 3,
    "pipeline": 4,
    "cli": 5,
    "server": 5,
}
# Programs see the library only through the public header.
PROGRAM_MAY_USE = {"cli": {"search"}, "server": {"search"}}
# The search library depends on core only, whatever its layer number says.
ONLY = {"search": {"core"}}

# (file, included folder) -> why it is allowed for now.
EXCEPTIONS = {
    ("src/cli/train.c", "core"): "`faceverify train` runs the training library on a pool",
    ("src/cli/train.c", "image"): "`faceverify train` downscales chips for scratch nets",
    ("src/cli/train.c", "train"): "`faceverify train` drives the internal training library",
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def folder_of(root, path):
    """The src/ folder (layer name) a repo file belongs to, or 'public'."""
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    if parts[0] == "include":
        return "public"
    if parts[0] == "src" and len(parts) > 2:
        return parts[1]
    return None


def resolve(root, src_file, name):
    """The repo file an #include "name" in src_file means, or None."""
    here = os.path.dirname(src_file)
    for base in (here, os.path.join(root, "src"), os.path.join(root, "include")):
        cand = os.path.normpath(os.path.join(base, name))
        if os.path.isfile(cand):
            return cand
    return None


def allowed(src, dst):
    """Whether folder src may include folder dst (both known layers)."""
    if src == dst or dst == "public":
        return True
    if src in PROGRAM_MAY_USE:
        return dst in PROGRAM_MAY_USE[src]
    if src in ONLY:
        return dst in ONLY[src]
    if dst in ONLY and dst not in PROGRAM_MAY_USE.get(src, set()):
        return False  # only the server uses search
    return LAYER[dst] < LAYER[src]


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), ".."))
    bad, used = [], set()
    for dirpath, _, files in os.walk(os.path.join(root, "src")):
        for fn in sorted(files):
            if not fn.endswith((".c", ".h", ".cpp")):
                continue
            path = os.path.join(dirpath, fn)
            src = folder_of(root, path)
            if src not in LAYER:
                bad.append("%s: folder %s has no layer; add it to scripts/check_layers.py "
                           "and docs/architecture.md" % (os.path.relpath(path, root), src))
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                for ln, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if not m:
                        continue
                    if "/" not in m.group(1) and m.group(1) != "faceverify.h" and \
                            resolve(root, path, m.group(1)):
                        bad.append('%s:%d: "%s": spell project includes "module/file.h"' % (
                            os.path.relpath(path, root), ln, m.group(1)))
                        continue
                    target = resolve(root, path, m.group(1))
                    dst = folder_of(root, target) if target else None
                    if dst is None or allowed(src, dst):
                        continue
                    rel = os.path.relpath(path, root)
                    if (rel, dst) in EXCEPTIONS:
                        used.add((rel, dst))
                        continue
                    bad.append('%s:%d: %s includes %s ("%s"): %s' % (
                        rel, ln, src, dst, m.group(1),
                        "the library is reached through include/faceverify.h"
                        if src in PROGRAM_MAY_USE else
                        "layer %d may not include layer %d" % (LAYER[src], LAYER.get(dst, -1))))
    for key in sorted(set(EXCEPTIONS) - used):
        bad.append("%s: listed exception for %s no longer occurs; remove it" % key)
    for b in bad:
        print(b)
    if bad:
        print("check-layers: %d violation(s); see docs/architecture.md" % len(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
