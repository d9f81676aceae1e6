#!/usr/bin/env bash
# Runs each libFuzzer harness of build-fuzz/ for FUZZ_SECONDS (make fuzz-run).
#   FUZZ_SECONDS=60 fuzz/run.sh [NAME...]     (default: every harness built)
# Each harness starts from a scratch copy of fuzz/corpus/NAME and
# fuzz/regressions/NAME (the tree is never written), with -rss_limit_mb=256
# -timeout=2.  Every crash, leak, timeout or out-of-memory input is copied
# into fuzz/regressions/NAME/ (commit it: make check replays it), except a
# timeout whose input replays alone under the limit three times (the
# machine was loaded: it is reported, not counted).  Prints
# executions per second and in total per harness; exits 1 if any harness
# found something.  FUZZ_FLAGS adds libFuzzer flags; FUZZ_KEEP=1 keeps the
# scratch directory (new corpus units in it can be copied into the tree).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${FUZZ_BUILD:-build-fuzz}
SECS=${FUZZ_SECONDS:-60}
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for b in "$OUT"/*_fuzzer; do
    [ -x "$b" ] && names+=("$(basename "$b" _fuzzer)")
  done
fi
if [ ${#names[@]} -eq 0 ]; then
  echo "fuzz/run.sh: no harness in $OUT (run make fuzz)" >&2
  exit 1
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/libimg-fuzz.XXXXXX")
[ "${FUZZ_KEEP:-0}" = 1 ] || trap 'rm -rf "$scratch"' EXIT
# A smaller quarantine keeps ASan itself well under the 256 MB RSS limit.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:quarantine_size_mb=32:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

found=0
summary=()
for n in "${names[@]}"; do
  bin=$OUT/${n}_fuzzer
  [ -x "$bin" ] || { echo "fuzz/run.sh: $bin missing" >&2; found=1; continue; }
  work=$scratch/$n
  mkdir -p "$work/corpus" "$work/artifacts"
  for d in fuzz/corpus/$n fuzz/regressions/$n; do
    [ -d "$d" ] && cp -RL "$d"/. "$work/corpus/" 2>/dev/null
  done
  rm -f "$work/corpus"/.gitkeep
  dict=()
  [ -f fuzz/$n.dict ] && dict=(-dict=fuzz/$n.dict)
  echo "== $n: ${SECS}s"
  # shellcheck disable=SC2086
  "$bin" -max_total_time="$SECS" -rss_limit_mb=256 -timeout=2 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "${dict[@]}" ${FUZZ_FLAGS:-} "$work/corpus" \
    >"$work/log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -n1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log" | tail -n1)
  units=$(find "$work/corpus" -type f | wc -l)
  arts=$(find "$work/artifacts" -type f | wc -l)
  # A timeout that does not come back when its input is replayed alone
  # (three times, same limit) was the machine's load, not the input: said,
  # not counted.  A real hang or slow path replays as slow every time.
  if [ "$rc" -ne 0 ] && [ "$arts" -gt 0 ] &&
     [ "$(find "$work/artifacts" -type f ! -name 'timeout-*' | wc -l)" -eq 0 ]; then
    flaky=1
    for a in "$work/artifacts"/timeout-*; do
      for _ in 1 2 3; do
        "$bin" -timeout=2 -rss_limit_mb=256 "$a" >/dev/null 2>&1 || { flaky=0; break 2; }
      done
    done
    if [ "$flaky" = 1 ]; then
      echo "  $n: a timeout under load did not reproduce in 3 replays of its input: not a finding"
      rm -f "$work/artifacts"/timeout-*
      rc=0; arts=0
    fi
  fi
  line=$(printf '%-6s %8s exec/s %11s execs  corpus %5s  exit %3d  findings %d' \
    "$n" "${speed:-?}" "${execs:-?}" "$units" "$rc" "$arts")
  summary+=("$line")
  if [ "$rc" -ne 0 ] || [ "$arts" -gt 0 ]; then
    found=1
    mkdir -p "fuzz/regressions/$n"
    for a in "$work/artifacts"/*; do
      [ -f "$a" ] || continue
      cp "$a" "fuzz/regressions/$n/"
      echo "  finding: fuzz/regressions/$n/$(basename "$a")"
    done
    grep -E -A30 '^(==[0-9]+== ?ERROR|FUZZ BUG|SUMMARY|.*runtime error)' "$work/log" | head -n 45 | sed 's/^/  | /'
    echo "  full log: $work/log (FUZZ_KEEP=1 keeps it)"
  fi
done

echo "== fuzz summary (${SECS}s each)"
printf '  %s\n' "${summary[@]}"
if [ "$found" -ne 0 ]; then
  echo "fuzz/run.sh: findings; inputs saved in fuzz/regressions/" >&2
  exit 1
fi
