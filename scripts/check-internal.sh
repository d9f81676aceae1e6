#!/usr/bin/env bash
# check-internal.sh [BUILD]: the public prefix img_ belongs to the public API
# (libimg/include/libimg.h); the library's internal names are imgi_
# (CONTRIBUTING.md).  Run by make check as the test unit/internal_names:
#  1. every symbol libimg.so exports is declared in libimg/include/libimg.h
#     and starts with img_;
#  2. no symbol libimg.a defines (functions and globals, static ones too)
#     starts with img_ unless libimg.h declares it;
#  3. no identifier in the code of libimg/*.c libimg/*.h (comments and
#     strings left out: types, static inline functions, ...) starts with
#     img_ unless libimg.h declares it;
#  4. the public header names no internal (imgi_) function, even in a comment.
# Run at the root of the tree after make.  Exit 0 clean, 1 with the names.
set -euo pipefail
BUILD=${1:-${BUILD:-build}}
so=$BUILD/lib/libimg.so a=$BUILD/lib/libimg.a
for f in "$so" "$a" libimg/include/libimg.h; do
  [ -e "$f" ] || { echo "check-internal: $f missing (make first)" >&2; exit 1; }
done
SO=$so A=$a python3 - <<'PY'
import glob, os, re, subprocess, sys

def code_of(text):
    pat = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
    return pat.sub(' ', text)

ident = re.compile(r'\bimg_[A-Za-z0-9_]*\b')
with open('libimg/include/libimg.h') as f:
    public = set(ident.findall(code_of(f.read())))

def nm(args):
    out = subprocess.run(['nm'] + args, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        p = line.split()
        if len(p) == 3:
            yield p[1], p[2].split('@')[0]

bad = []
for t, s in nm(['-D', '--defined-only', os.environ['SO']]):
    if t == 'A':            # the version node (LIBIMG_x.y)
        continue
    if not s.startswith('img_'):
        bad.append(f'libimg.so exports {s}, which does not start with img_')
    elif s not in public:
        bad.append(f'libimg.so exports {s}, which libimg.h does not declare')
for t, s in sorted(set(nm(['--defined-only', os.environ['A']]))):
    base = s.split('.')[0]  # foo.localalias, foo.constprop.0, ...
    if base.startswith('img_') and base not in public:
        bad.append(f'libimg.a defines {s} ({t}): internal, but with the public prefix img_')
for p in sorted(glob.glob('libimg/*.c') + glob.glob('libimg/*.h')):
    with open(p, encoding='utf-8', errors='replace') as f:
        for n in sorted(set(ident.findall(code_of(f.read()))) - public):
            bad.append(f'{p}: {n}: internal, but with the public prefix img_')
with open('libimg/include/libimg.h') as f:
    for n in sorted(set(re.findall(r'\bimgi_[A-Za-z0-9_]*', f.read()))):
        bad.append(f'libimg/include/libimg.h names the internal {n} (a comment?)')
if bad:
    print('check-internal: the prefix img_ is the public API\'s (libimg.h); internal names are imgi_:')
    print('  ' + '\n  '.join(bad))
    sys.exit(1)
print(f'check-internal: {len(public)} public img_ names; no internal one has the prefix')
PY
