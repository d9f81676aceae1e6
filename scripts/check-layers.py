#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The library's layers, checked on the compiled objects.

For each libimg/*.c module, the functions (and data) it uses from other
modules are its object's undefined symbols (nm), each matched to the object
that defines it.  A call may go down the layer order or stay inside a layer;
it fails when it goes up, and any cycle between modules fails (inside a
layer too).  The order is the one line in CONTRIBUTING.md ("Layers"); this
script checks that the line there is the one it enforces.

Usage: scripts/check-layers.py [BUILD]   (default: build; needs the objects
BUILD/obj/libimg/*.o, e.g. after make).  Exit 0 clean, 1 violations, 77 skip.
"""
import glob
import os
import subprocess
import sys

# Bottom to top.  A module calls modules of its own layer or of layers
# below it, never above.  A new libimg/*.c must be placed here.
LAYERS = [
    ("format", ["format"]),
    ("util", ["error", "util"]),
    ("io", ["io", "io_posix", "io_uring", "io_mem", "io_crash", "io_fault", "lock", "vfs"]),
    ("alloc/bat", ["alloc", "bat"]),
    ("journal", ["journal"]),
    ("compress", ["compress"]),
    ("rw", ["rw", "bulk"]),
    ("open", ["image"]),
    ("operations", ["check", "resize", "compact", "snapshot", "fs"]),
]

# Known violations still in the code: (caller module, callee module,
# symbol) -> why it is still there, e.g.
#     ("rw", "image", "imgi_fail"): "a utility still in image.c",
# Each is skipped by both checks; any other upward call or cycle fails, and
# an entry whose call is gone fails too (STALE).  Empty: the 20 violations
# of the first run (utilities in image.c and check.c, imgi_header_commit in
# image.c, img_pwrite from compress.c, the io_posix/io_uring cycle) moved.
ALLOWED = {
}

ORDER_LINE = " → ".join(name for name, _ in LAYERS)


def nm(obj):
    out = subprocess.run(["nm", obj], check=True, capture_output=True, text=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        f = line.split()
        if len(f) == 2 and f[0] == "U":
            undefined.add(f[1])
        elif len(f) == 3 and f[1] in "TDRBGSVW" and f[1].isupper():
            defined.add(f[2])
    return defined, undefined


def find_cycles(edges, nodes):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return sccs


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    objdir = os.path.join(build, "obj", "libimg")
    srcs = sorted(os.path.basename(p)[:-2] for p in glob.glob(os.path.join(root, "libimg", "*.c")))
    objs = {m: os.path.join(objdir, m + ".o") for m in srcs}
    missing = [o for o in objs.values() if not os.path.exists(o)]
    if missing:
        print("skip: no object %s (build the library first)" % missing[0])
        return 77
    try:
        syms = {m: nm(o) for m, o in objs.items()}
    except (OSError, subprocess.CalledProcessError) as e:
        print("skip: nm failed: %s" % e)
        return 77

    bad = 0
    layer_of = {}
    for i, (name, mods) in enumerate(LAYERS):
        for m in mods:
            layer_of[m] = (i, name)
    for m in srcs:
        if m not in layer_of:
            print("UNPLACED  libimg/%s.c is in no layer: add it to LAYERS in %s and to "
                  "the layer line in CONTRIBUTING.md" % (m, sys.argv[0]))
            bad += 1
    if bad:
        return 1

    contrib = os.path.join(root, "CONTRIBUTING.md")
    with open(contrib, encoding="utf-8") as f:
        if ORDER_LINE not in f.read():
            print("DRIFT     CONTRIBUTING.md does not state the order this script enforces: %s"
                  % ORDER_LINE)
            bad += 1

    owner = {}
    for m in srcs:
        for s in syms[m][0]:
            owner.setdefault(s, m)

    # calls[(caller, callee)] = sorted symbols
    calls = {}
    for m in srcs:
        for s in syms[m][1]:
            o = owner.get(s)
            if o is None or o == m:
                continue
            calls.setdefault((m, o), []).append(s)

    used_allow = set()
    edges = {}
    for (a, b), ss in sorted(calls.items()):
        for s in sorted(ss):
            if (a, b, s) in ALLOWED:
                used_allow.add((a, b, s))
                continue
            edges.setdefault(a, set()).add(b)
            la, lb = layer_of[a], layer_of[b]
            if lb[0] > la[0]:
                print("UPWARD    %s.c (%s) calls %s in %s.c (%s)" % (a, la[1], s, b, lb[1]))
                bad += 1

    for comp in find_cycles(edges, srcs):
        inside = set(comp)
        print("CYCLE     between %s:" % ", ".join(c + ".c" for c in comp))
        for (a, b), ss in sorted(calls.items()):
            if a in inside and b in inside and b in edges.get(a, ()):
                ss = [s for s in sorted(ss) if (a, b, s) not in ALLOWED]
                print("            %s.c -> %s.c: %s" % (a, b, " ".join(ss)))
        bad += 1

    for k in sorted(set(ALLOWED) - used_allow):
        print("STALE     allowed %s.c -> %s.c %s is no longer called: remove it from ALLOWED" % k)
        bad += 1

    if bad:
        print("%d layer violation(s); the order: %s" % (bad, ORDER_LINE))
        return 1
    print("layers clean: %d modules, %d cross-module uses, %d allowed; the order: %s"
          % (len(srcs), sum(len(v) for v in calls.values()), len(used_allow), ORDER_LINE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
