#!/usr/bin/env bash
# Runs the test suites and ends with one line: "N passed, N failed, N skipped".
# Usage: tests/run.sh [unit] [crash] [fuzz] [cli] [online] [asan] [tsan] [install]
#        (default: unit crash fuzz cli online; BUILD=DIR, TEST_TIMEOUT=SECONDS)
# Unit and crash tests are C programs: exit 0 pass, 77 skip, anything else fail.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
TIMEOUT=${TEST_TIMEOUT:-900}   # per program or .bats file: a hang, not a slow machine
suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=(unit crash fuzz cli online)
# Usage with sanitizers: tests/run.sh asan tsan (after make asan-build tsan-build)

pass=0; fail=0; skip=0; failed=()
log_dir=$BUILD/test-logs; mkdir -p "$log_dir"
# Every JSON document a tool prints in the cli and online suites is logged
# here (LIBIMG_TEST_JSON_LOG, tools/common.c) and validated at the end
# against tools/schema/TOOL.json: one more test, "json/schemas".
run_tmp=$(mktemp -d); trap 'rm -rf "$run_tmp"' EXIT
json_log=$run_tmp/json.log; json_logged=0

run_prog() { # name, command...
  local name=$1; shift
  local log="$log_dir/${name//\//_}.log" rc
  timeout "$TIMEOUT" "$@" >"$log" 2>&1; rc=$?
  case $rc in
    0)  pass=$((pass+1)); printf '  PASS  %s\n' "$name" ;;
    77) skip=$((skip+1)); printf '  SKIP  %s (%s)\n' "$name" "$(tail -n1 "$log")" ;;
    *)  fail=$((fail+1)); failed+=("$name"); printf '  FAIL  %s (exit %d)\n' "$name" "$rc"
        tail -n 20 "$log" | sed 's/^/        /' ;;
  esac
  grep -h '^SUMMARY:' "$log" | sed 's/^/        /' || true
}

# Each .bats file runs under its own timeout; a file that stops before its
# plan ("1..N") is complete (a timeout, a crash of bats) counts as a failure.
run_bats() { # dir
  local dir=$1 f line plan ran
  ls "$dir"/*.bats >/dev/null 2>&1 || return 0
  local out; out=$(mktemp)
  for f in "$dir"/*.bats; do
    BUILD=$BUILD timeout "$TIMEOUT" bats --tap "$f" >"$out" 2>&1
    ran=0
    while IFS= read -r line; do
      case $line in
        "ok "*"# skip"*) skip=$((skip+1)); ran=$((ran+1)); printf '  SKIP  %s: %s\n' "${f##*/}" "${line#ok }" ;;
        "ok "*)          pass=$((pass+1)); ran=$((ran+1)); printf '  PASS  %s: %s\n' "${f##*/}" "${line#ok }" ;;
        "not ok "*)      fail=$((fail+1)); ran=$((ran+1)); failed+=("${f##*/}: ${line#not ok }")
                         printf '  FAIL  %s: %s\n' "${f##*/}" "${line#not ok }" ;;
        "#"*)            printf '        %s\n' "$line" ;;
      esac
    done <"$out"
    plan=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "$out" | head -n1)
    if [ -z "$plan" ] || [ "$ran" -lt "$plan" ]; then
      fail=$((fail+1)); failed+=("bats $f: $ran of ${plan:-?} tests ran")
      printf '  FAIL  %s: %s of %s tests ran (timeout %ss?)\n' "$f" "$ran" "${plan:-?}" "$TIMEOUT"
      tail -n 5 "$out" | sed 's/^/        /'
    fi
  done
  rm -f "$out"
}

for s in "${suites[@]}"; do
  echo "== $s"
  case $s in
    unit|crash)
      for t in "$BUILD"/tests/$s/*; do
        [ -x "$t" ] || continue
        run_prog "$s/$(basename "$t")" "$t"
      done
      # the library's layer order, on the objects (CONTRIBUTING.md, Layers)
      [ "$s" = unit ] && run_prog "unit/layers" scripts/check-layers.py "$BUILD"
      [ "$s" = unit ] && run_prog "unit/internal_names" scripts/check-internal.sh "$BUILD"
      # no code compares a table of operations (scripts/check-type-tests.sh)
      [ "$s" = unit ] && run_prog "unit/no_type_tests" scripts/check-type-tests.sh ;;
    fuzz)
      for t in "$BUILD"/fuzz/*_fuzzer; do
        [ -x "$t" ] || continue
        n=$(basename "$t")
        dirs=()
        for d in fuzz/corpus/${n%_fuzzer} fuzz/regressions/${n%_fuzzer}; do
          [ -d "$d" ] && dirs+=("$d")
        done
        [ ${#dirs[@]} -gt 0 ] || continue
        run_prog "fuzz/$n" "$t" "${dirs[@]}"
      done ;;
    asan)   # the sanitizer build (make asan-build) of unit, crash and fuzz replay
      save_timeout=$TIMEOUT; TIMEOUT=$((TIMEOUT * 2))   # sanitizers: slower
      for d in unit crash; do
        for t in build-asan/tests/$d/*; do
          [ -x "$t" ] || continue
          # the full crash-point set is for the normal build; ASan samples
          CRASH_FULL= ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
            run_prog "asan/$d/$(basename "$t")" "$t"
        done
      done
      TIMEOUT=$save_timeout
      for t in build-asan/fuzz/*_fuzzer; do
        [ -x "$t" ] || continue
        n=$(basename "$t"); dirs=()
        for d in fuzz/corpus/${n%_fuzzer} fuzz/regressions/${n%_fuzzer}; do [ -d "$d" ] && dirs+=("$d"); done
        [ ${#dirs[@]} -gt 0 ] && run_prog "asan/fuzz/$n" "$t" "${dirs[@]}"
      done ;;
    tsan)
      if [ -x build-tsan/threads ]; then
        TSAN_OPTIONS=halt_on_error=1 run_prog "tsan/threads" build-tsan/threads
      fi ;;
    install) run_prog "install/pkg-config" scripts/test-install.sh ;;
    cli|online)
      LIBIMG_TEST_JSON_LOG=$json_log; export LIBIMG_TEST_JSON_LOG
      run_bats tests/$s
      unset LIBIMG_TEST_JSON_LOG; json_logged=1 ;;
    *) echo "unknown suite: $s" >&2; exit 2 ;;
  esac
done

if [ "$json_logged" = 1 ]; then
  echo "== json"
  if [ -s "$json_log" ]; then
    run_prog "json/schemas" python3 tests/helpers/json_check.py "$json_log" tools/schema
    cp "$json_log" "$log_dir/json_documents.log"   # what was checked
  else
    skip=$((skip+1)); printf '  SKIP  json/schemas (no tool printed JSON)\n'
  fi
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "failed:"; printf '  %s\n' "${failed[@]}"
fi
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
