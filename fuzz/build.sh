#!/usr/bin/env bash
# Builds the fuzz harnesses with libFuzzer into build-fuzz/ (make fuzz):
#   build-fuzz/NAME_fuzzer   clang -fsanitize=fuzzer,address,undefined
#   build-fuzz/gen_corpus    the seed corpus generator (fuzz/gen_corpus.sh)
# The library is compiled with -fsanitize=fuzzer-no-link,address,undefined.
# tools_fuzzer also links tools/common.c and tools/online/control.c (the
# control protocol's reply parser); it is skipped while tools/common.c does
# not exist.  Environment: FUZZ_CC (clang), FUZZ_BUILD (build-fuzz),
# FUZZ_CFLAGS (extra flags), V=1 to echo commands.
set -euo pipefail
cd "$(dirname "$0")/.."

CC=${FUZZ_CC:-clang}
OUT=${FUZZ_BUILD:-build-fuzz}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
CFLAGS="-std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -g -O1 -fno-omit-frame-pointer \
 -pthread -Ilibimg/include -Ilibimg -Wall -Wextra -Wno-unused-parameter \
 ${FUZZ_CFLAGS:-}"
# -Werror only for the harnesses: gcc gates the library's warnings (make),
# and a clang-only warning there must not stop the fuzzing.
# libimg/fs.c needs libblkid and libext2fs (as in the Makefile).
FS_PKGS="blkid ext2fs com_err liburing liblz4"
CFLAGS="$CFLAGS $(pkg-config --cflags $FS_PKGS 2>/dev/null || echo -I/usr/include/blkid)"
LIBS="$(pkg-config --libs $FS_PKGS 2>/dev/null || echo -lblkid -lext2fs -lcom_err -luring -llz4)"
HCFLAGS="-Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror"

if ! command -v "$CC" >/dev/null 2>&1; then
  echo "fuzz/build.sh: $CC not found (apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi

run() { [ "${V:-0}" = 1 ] && echo "$*"; "$@"; }

mkdir -p "$OUT/obj/libimg" "$OUT/obj/tools/online"

# Compile only what changed (the output is older than the source or a header).
hdrs=(libimg/*.h libimg/include/*.h fuzz/*.h)
[ -d tools ] && ls tools/*.h >/dev/null 2>&1 && hdrs+=(tools/*.h)
[ -d tools/online ] && ls tools/online/*.h >/dev/null 2>&1 && hdrs+=(tools/online/*.h)
newest_hdr=$(ls -t "${hdrs[@]}" | head -n1)
stale() { # out src...
  local o=$1; shift
  [ -e "$o" ] || return 0
  for s in "$@" "$newest_hdr" "$0"; do [ "$s" -nt "$o" ] && return 0; done
  return 1
}

objs=()
for src in libimg/*.c; do
  o=$OUT/obj/${src%.c}.o
  objs+=("$o")
  if stale "$o" "$src"; then
    echo "  CC      $src"
    run $CC $CFLAGS -fsanitize=fuzzer-no-link $SAN -c -o "$o" "$src"
  fi
done
lib=$OUT/libimg-fuzz.a
rm -f "$lib"
ar rcs "$lib" "${objs[@]}"

common=()
if [ -f tools/common.c ]; then
  for src in tools/common.c tools/online/control.c; do   # see Makefile
    o=$OUT/obj/${src%.c}.o
    common+=("$o")
    if stale "$o" "$src"; then
      echo "  CC      $src"
      run $CC $CFLAGS -fsanitize=fuzzer-no-link $SAN -c -o "$o" "$src"
    fi
  done
fi

built=()
for src in fuzz/*_fuzzer.c; do
  name=$(basename "$src" .c)
  extra=()
  if [ "$name" = tools_fuzzer ]; then
    if [ ${#common[@]} -eq 0 ]; then
      echo "  SKIP    $name (no tools/common.c yet)"
      continue
    fi
    extra=("${common[@]}")
  fi
  if stale "$OUT/$name" "$src" "$lib" "${extra[@]}"; then
    echo "  LINK    $OUT/$name"
    run $CC $CFLAGS $HCFLAGS -fsanitize=fuzzer $SAN -o "$OUT/$name" "$src" "${extra[@]}" "$lib" $LIBS
  fi
  built+=("$name")
done

if stale "$OUT/gen_corpus" fuzz/gen_corpus.c "$lib"; then
  echo "  LINK    $OUT/gen_corpus"
  run $CC $CFLAGS $HCFLAGS $SAN -o "$OUT/gen_corpus" fuzz/gen_corpus.c "$lib" $LIBS
fi
echo "fuzz/build.sh: built ${built[*]} in $OUT/"
