#!/usr/bin/env bats
# The tools on every image of the fuzz seed corpus and every regression
# input: a clean error and a non-zero exit, never a crash (issue 7).
#
# fuzz/corpus/open/ names say what a reader must do (fuzz/gen_corpus.c):
#   valid-*  imginfo, imgmap and imgcheck exit 0
#   ok-*     imginfo exits 0
#   bad-*    imginfo and imgmap fail, imgcheck exits 1, 2 or 63
#   other    anything but a signal
# Every run: no signal, no timeout, imgcheck exits 0, 1, 2, 3 or 63, and a
# failure names the file on stderr (imgcheck's results 2 and 3 excepted).  The same runs again with the ASan build
# of the tools when one exists (build-asan/bin), and under valgrind on the
# small malformed seeds when valgrind is installed.

bats_require_minimum_version 1.5.0

setup() {
  ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
  BUILD=${BUILD:-build}
  case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
  T=$BATS_TEST_TMPDIR/corpus
  mkdir -p "$T"
  # Copies: the tools open images, and the tree must not change.
  for f in "$ROOT"/fuzz/corpus/open/* "$ROOT"/fuzz/regressions/open/* \
           "$ROOT"/fuzz/regressions/check/*; do
    [ -f "$f" ] && cp "$f" "$T/"
  done
  # Seeds are kept short (no log, no BAT); a file shorter than its metadata
  # area is truncated, corrupt (FORMAT.md 2): each is made whole (sparse),
  # as the fuzz harnesses do (fuzz/fuzz.h, fuzz_hole_to).
  if command -v python3 >/dev/null; then
    for f in "$T"/*; do
      [ -f "$f" ] && python3 "$ROOT/tests/helpers/poke.py" "$f" pad
    done
  fi
  FAILS=$BATS_TEST_TMPDIR/fails
  : >"$FAILS"
}

need_tools() { # BINDIR
  local t
  for t in imginfo imgcheck imgmap; do
    [ -x "$1/$t" ] || skip "$1/$t not built"
  done
  ls "$T"/* >/dev/null 2>&1 || skip "no corpus files"
}

fail_with() { echo "$*" >>"$FAILS"; }

# one WRAPPER... -- TOOL ARGS... FILE: runs it, checks the common rules,
# leaves the exit status in $st.
one() {
  local wrap=() tool file name err
  while [ "$1" != -- ]; do wrap+=("$1"); shift; done
  shift
  tool=$1; file=${*: -1}; name=$(basename "$file")
  err=$BATS_TEST_TMPDIR/err
  st=0
  timeout 120 "${wrap[@]}" "$@" >"$BATS_TEST_TMPDIR/out" 2>"$err" || st=$?
  if [ "$st" -ge 124 ]; then
    fail_with "$(basename "$tool") $name: exit $st (signal or timeout): $(head -c 300 "$err")"
  elif [ "$st" -ne 0 ] && ! grep -qF "$name" "$err" &&
       ! { [ "$(basename "$tool")" = imgcheck ] && [ "$st" -le 3 ]; }; then
    # (imgcheck's 2 and 3 are results, reported on stdout like qemu-img)
    fail_with "$(basename "$tool") $name: exit $st without naming the file: $(head -c 200 "$err")"
  fi
}

check_dir() { # BINDIR [WRAPPER...]
  local bin=$1; shift
  local f n
  for f in "$T"/*; do
    n=$(basename "$f")
    one "$@" -- "$bin/imginfo" "$f";  local info=$st
    one "$@" -- "$bin/imginfo" --json "$f"
    if [ "$st" -eq 0 ] && command -v jq >/dev/null && ! jq -e . "$BATS_TEST_TMPDIR/out" >/dev/null 2>&1; then
      fail_with "imginfo --json $n: not JSON"
    fi
    one "$@" -- "$bin/imgmap" "$f";   local map=$st
    one "$@" -- "$bin/imgcheck" "$f"; local chk=$st
    case $chk in 0|1|2|3|63) ;; *) fail_with "imgcheck $n: exit $chk" ;; esac
    case $n in
      valid-*) [ "$info$map$chk" = 000 ] || fail_with "$n: valid image: imginfo $info, imgmap $map, imgcheck $chk" ;;
      ok-*)    [ "$info" = 0 ] || fail_with "$n: imginfo $info" ;;
      bad-*)   [ "$info" != 0 ] && [ "$map" != 0 ] || fail_with "$n: malformed image accepted: imginfo $info, imgmap $map"
               case $chk in 1|2|63) ;; *) fail_with "$n: malformed image: imgcheck $chk" ;; esac ;;
    esac
  done
  if [ -s "$FAILS" ]; then
    cat "$FAILS"
    return 1
  fi
}

@test "corpus: imginfo, imgmap, imgcheck on every seed and regression image" {
  need_tools "$BUILD/bin"
  check_dir "$BUILD/bin"
}

@test "corpus: the same with the ASan+UBSan tools (build-asan/bin)" {
  need_tools "$ROOT/build-asan/bin"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1 check_dir "$ROOT/build-asan/bin"
}

@test "corpus: imginfo and imgcheck under valgrind on the small malformed seeds" {
  command -v valgrind >/dev/null || skip "valgrind not installed"
  need_tools "$BUILD/bin"
  local f n=0 vg=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite)
  for f in "$T"/bad-* "$T"/odd-* "$T"/ok-hdr-*; do
    [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 8192 ] || continue
    for t in imginfo imgcheck; do
      one "${vg[@]}" -- "$BUILD/bin/$t" "$f"
      [ "$st" -ne 99 ] || fail_with "valgrind: $t $(basename "$f"): $(head -c 400 "$BATS_TEST_TMPDIR/err")"
    done
    n=$((n + 1))
    [ "$n" -lt 12 ] || break
  done
  if [ -s "$FAILS" ]; then
    cat "$FAILS"
    return 1
  fi
}
