#!/usr/bin/env bats
# What every tool shares: --help, --version, usage errors, missing files,
# files that are not images, man pages.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

@test "every tool: --help fits a screen and exits 0" {
  for t in $TOOLS; do
    run_split "$t" --help
    [ "$status" -eq 0 ] || { echo "$t: status $status"; false; }
    [[ "$out" == "Usage: $t "* ]] || { echo "$t: $out"; false; }
    lines=$(printf '%s\n' "$out" | wc -l)
    [ "$lines" -le 24 ] || { echo "$t: $lines lines"; false; }
    width=$(printf '%s\n' "$out" | awk '{ if (length > w) w = length } END { print w }')
    [ "$width" -le 80 ] || { echo "$t: $width columns"; false; }
    [ -z "$err" ]
  done
}

@test "every tool: --version names the library version" {
  ver=$("$ROOT/scripts/version.sh")
  [ -n "$ver" ]
  for t in $TOOLS; do
    run_tool "$t" --version
    [ "$status" -eq 0 ]
    [ "$output" = "$t (libimg) $ver" ]
  done
}

@test "every tool: an unknown option is a usage error (exit 2; imgcheck 1)" {
  for t in $TOOLS; do
    run_split "$t" --no-such-option x y
    want=2; [ "$t" = imgcheck ] && want=1
    [ "$status" -eq $want ] || { echo "$t: status $status"; false; }
    [[ "$err" == *"Try '$t --help'"* ]] || { echo "$t: $err"; false; }
    [ -z "$out" ]
  done
}

@test "every tool: missing arguments are a usage error (exit 2; imgcheck 1)" {
  for t in $TOOLS; do
    run_split "$t"
    want=2; [ "$t" = imgcheck ] && want=1
    [ "$status" -eq $want ] || { echo "$t: status $status"; false; }
    [[ "$err" == "$t: expected"* ]] || { echo "$t: $err"; false; }
  done
  run_split mkimg a.img
  [ "$status" -eq 2 ]
  [ ! -e a.img ]
  run_split imgconvert a.raw
  [ "$status" -eq 2 ]
  run_split imginfo a b
  [ "$status" -eq 2 ]
  [[ "$err" == *"too many arguments"* ]]
}

@test "every tool: a missing file is named with the problem (exit 5; imgcheck 1)" {
  for t in imginfo imgmap imgcheck compact; do
    run_split "$t" nope.img
    want=5; [ "$t" = imgcheck ] && want=1
    [ "$status" -eq $want ] || { echo "$t: status $status"; false; }
    [ "$err" = "$t: nope.img: No such file or directory" ] || { echo "$t: $err"; false; }
  done
  for t in growimg shrinkimg; do
    run_split "$t" nope.img 1G
    [ "$status" -eq 5 ]
    [ "$err" = "$t: nope.img: No such file or directory" ] || { echo "$t: $err"; false; }
  done
  run_split imgconvert nope.raw out.img
  [ "$status" -eq 5 ]
  [ "$err" = "imgconvert: nope.raw: No such file or directory" ]
  [ ! -e out.img ]
  run_split mkimg no/such/dir/a.img 1G
  [ "$status" -eq 5 ]
  [[ "$err" == "mkimg: no/such/dir/a.img: "* ]]
}

@test "every tool: a file that is not an image is refused (exit 3; imgcheck 1)" {
  head -c 1M /dev/urandom > not.img
  cp not.img orig
  for t in imginfo imgmap imgcheck compact; do
    run_split "$t" not.img
    want=3; [ "$t" = imgcheck ] && want=1
    [ "$status" -eq $want ] || { echo "$t: status $status"; false; }
    [ "$err" = "$t: not.img: not a libimg image" ] || { echo "$t: $err"; false; }
  done
  for t in growimg shrinkimg; do
    run_split "$t" not.img 512
    [ "$status" -eq 3 ]
    [ "$err" = "$t: not.img: not a libimg image" ]
  done
  cmp not.img orig
}

@test "every tool: -q keeps a successful run silent" {
  make_raw a.raw
  run_tool mkimg -q e.img 1G
  [ "$status" -eq 0 ] && [ -z "$output" ]
  run_tool imgconvert -q a.raw a.img
  [ "$status" -eq 0 ] && [ -z "$output" ]
  for cmd in "imginfo -q a.img" "imgmap -q a.img" "imgcheck -q a.img" \
             "growimg -q a.img 32M" "shrinkimg -q a.img 16M" "compact -q a.img"; do
    run_tool $cmd
    [ "$status" -eq 0 ] || { echo "$cmd: $status"; false; }
    [ -z "$output" ] || { echo "$cmd: $output"; false; }
  done
}

@test "every tool has a man page with its exit statuses, clean for groff" {
  for t in $TOOLS; do
    f=$ROOT/man/$t.1
    [ -f "$f" ] || { echo "no $f"; false; }
    for s in NAME SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" EXAMPLES; do
      grep -q "^\.SH \"\?$s\"\?\$" "$f" || { echo "$t.1: no section $s"; false; }
    done
    grep -q "^\.TH ${t^^} 1" "$f"
    if command -v groff >/dev/null; then
      run groff -man -ww -z "$f"
      [ "$status" -eq 0 ] && [ -z "$output" ] || { echo "$t.1: $output"; false; }
    fi
  done
}
