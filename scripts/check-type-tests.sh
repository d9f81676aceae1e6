#!/usr/bin/env bash
# check-type-tests.sh: no code asks what a table of operations is by
# comparing it (issue 17).  What a backend or a vfs can do is one of its
# operations or capabilities (struct img_io_ops: seek_data, advise,
# read_direct; struct imgi_vfs: open_uring, dir_writable, space_free, ...,
# NULL meaning the documented default), never `io->ops == &posix_ops` nor
# `imgi_vfs == &imgi_vfs_posix`.  Looks at the code of libimg/ and tools/
# (comments and strings left out) for an == or != whose side is an ops
# pointer, the installed vfs, or the address of a table (&NAME_ops,
# &imgi_vfs_NAME); a comparison with NULL is allowed.  Run by
# tests/run.sh unit as the test unit/no_type_tests, at the root of the
# tree.  Exit 0 clean, 1 with each comparison's file and line.
set -euo pipefail
python3 - <<'PY'
import glob, re, sys

def code_of(text):
    # comments and strings blanked, newlines kept (line numbers hold)
    pat = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
    return pat.sub(lambda m: re.sub(r'[^\n]', ' ', m.group(0)), text)

table = r'(?:->\s*ops|\bimgi_vfs|&\s*\w*_ops|&\s*imgi_vfs_\w+)'
left = re.compile(table + r'\s*$')
right = re.compile(r'^\s*' + table + r'\b')
null_left = re.compile(r'\bNULL\s*$')
null_right = re.compile(r'^\s*NULL\b')
bad = []
files = sorted(glob.glob('libimg/*.[ch]') + glob.glob('tools/*.[ch]') + glob.glob('tools/*/*.[ch]'))
if not files:
    sys.exit('check-type-tests: no libimg/*.c here (run at the root of the tree)')
for path in files:
    with open(path) as f:
        code = code_of(f.read())
    for n, line in enumerate(code.split('\n'), 1):
        for m in re.finditer(r'[!=]=', line):
            a, b = line[:m.start()], line[m.end():]
            if (left.search(a) and not null_right.search(b)) or \
               (right.search(b) and not null_left.search(a)):
                bad.append(f'{path}:{n}: {line.strip()}')
                break
for b in bad:
    print(b)
if bad:
    print(f'check-type-tests: {len(bad)} comparison(s) of a table of operations; '
          'give the table an operation or a capability instead (issue 17)')
    sys.exit(1)
print(f'check-type-tests: {len(files)} files, no table compared')
PY
