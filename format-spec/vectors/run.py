#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""run.py [--category CAT]... READER [ARG...]: run a reader over the vectors.

For another implementation of the libimg format: READER is any program
that, run as `READER [ARG...] IMAGE OUT`, opens IMAGE read-only and
  - writes the whole virtual disk to the file OUT and exits 0 (opens),
  - exits 10 when it refuses the image as corrupt (also when reading the
    disk fails on damaged data),
  - exits 11 when the image needs a newer implementation (unsupported),
  - exits 12 when the image's backing chain cannot be opened.
Any other exit status is a failure of the vector.  run.py copies this
directory to a temporary one first (READER never sees the checked-in
files), runs READER on every vector of vectors.json (or of the categories
named), compares the verdict and, for "opens", the size and sha256 of OUT,
prints one line per vector that disagrees and a summary, and exits 0 when
all agree, 1 otherwise.

libimg's own tools as a READER, for example (tests/cli/conformance.bats):
  imgconvert -q -F libimg -O raw IMAGE OUT; 0 -> 0, 3 -> 10, 4 -> 12,
  1 with "needs a newer libimg" on stderr -> 11.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

STATUS = {0: "opens", 10: "corrupt", 11: "unsupported", 12: "chain-error"}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv):
    cats = []
    while len(argv) >= 2 and argv[0] == "--category":
        cats.append(argv[1])
        argv = argv[2:]
    if not argv or argv[0].startswith("-"):
        sys.stderr.write(__doc__)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "vectors.json")) as f:
        vectors = json.load(f)["vectors"]
    if cats:
        vectors = [v for v in vectors if v["category"] in cats]
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "vectors")
        shutil.copytree(here, copy, symlinks=True)
        out = os.path.join(tmp, "out.raw")
        for v in vectors:
            if os.path.lexists(out):
                os.unlink(out)
            r = subprocess.run(argv + [os.path.join(copy, v["file"]), out],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            got = STATUS.get(r.returncode, "exit %d" % r.returncode)
            why = None
            if got != v["verdict"]:
                why = "%s, want %s: %s" % (got, v["verdict"],
                                          r.stderr.decode(errors="replace").strip()[:200])
            elif got == "opens":
                size = os.path.getsize(out) if os.path.exists(out) else -1
                if size != v["virtual_size"]:
                    why = "disk of %d bytes, want %d" % (size, v["virtual_size"])
                elif sha256_file(out) != v["sha256"]:
                    why = "sha256 of the disk differs"
            if why:
                bad += 1
                print("FAIL %s: %s" % (v["name"], why))
        for root, _, files in os.walk(here):
            for fn in files:
                p = os.path.join(root, fn)
                q = os.path.join(copy, os.path.relpath(p, here))
                if fn.endswith(".img") and not os.path.islink(p) and sha256_file(p) != sha256_file(q):
                    bad += 1
                    print("FAIL %s: changed by the reader" % os.path.relpath(p, here))
    print("%d of %d vectors agree" % (len(vectors) - bad, len(vectors)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
