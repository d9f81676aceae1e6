#!/usr/bin/env bats
# imgctl without a served image (no root needed): exit statuses of issue 16
# (6 not served, 5 missing, 2 usage), the JSON error object, and --help,
# man page and JSON Schema telling the same story.

load helpers

setup() {
  common_setup
  export LIBIMG_RUNDIR=$BATS_TEST_TMPDIR/run
}
teardown() { common_teardown; }

# valid: $output is a document of tools/schema/imgctl.json.
valid() {
  printf '%s\n' "$output" | python3 -c '
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator(schema).validate(json.load(sys.stdin))' "$ROOT/tools/schema/imgctl.json"
}

# valid_error: $output is the error object (tools/schema/error.json once
# it exists; until then its keys).
valid_error() {
  if [ -f "$ROOT/tools/schema/error.json" ]; then
    printf '%s\n' "$output" | python3 -c '
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator(schema).validate(json.load(sys.stdin))' "$ROOT/tools/schema/error.json"
  else
    [ "$(jget '[keys_unsorted[]] | join(" ")')" = "schema error" ]
    [ "$(jget '.error | keys_unsorted | join(" ")')" = "status errno errno_name message file holder_pid" ]
  fi
}

# jget FILTER: jq on $output (stdout, after run_split).
jget() { printf '%s\n' "$output" | jq -r "$1"; }

@test "issue 16 #5: imgctl: not served 6, missing 5, bad usage 2" {
  "$BIN/mkimg" -q a.img 64M
  run_split imgctl status a.img
  [ "$status" -eq 6 ]
  [[ "$err" == "imgctl: a.img: not served"* ]]
  run_split imgctl send a.img status
  [ "$status" -eq 6 ]
  run_split imgctl compact a.img
  [ "$status" -eq 6 ]
  mkdir d
  run_split imgctl status d
  [ "$status" -eq 6 ]
  run_split imgctl status nope.img
  [ "$status" -eq 5 ]
  run_split imgctl status -j nope.img
  [ "$status" -eq 5 ]
  [ "$(jget .error.errno_name)" = ENOENT ]
  valid_error
  [ "$(jget .error.file)" = nope.img ]
  for args in "" "frobnicate a.img" "status" "status a.img b.img" "list x" "send a.img" \
              "grow a.img" "grow a.img 1Q" "shrink a.img 1G maybe" "compact a.img zero" \
              "stop a.img now" "--wait=x list" "--no-such-option list"; do
    run_split imgctl $args
    [ "$status" -eq 2 ] || { echo "imgctl $args: $status"; false; }
    [[ "$err" == *"Try 'imgctl --help'"* ]]
    [ -z "$out" ]
  done
  run_split imgctl -j grow a.img
  [ "$status" -eq 2 ]
  [ "$(jget .error.status)" = 2 ]
  [ "$(jget .error.errno)" = null ]
  valid_error
  run_split imgctl -j status a.img
  [ "$status" -eq 6 ]
  [ "$(jget .error.status)" = 6 ]
  [ "$(jget .error.file)" = a.img ]
  valid_error
  run_split imgctl list -j
  [ "$status" -eq 0 ]
  valid
  [ "$(jget '.images | length')" = 0 ]
}

@test "issue 16 #5: imgctl list with nothing served: no line of text, an empty JSON list" {
  run_split imgctl list
  [ "$status" -eq 0 ]
  [ -z "$out" ] && [ -z "$err" ]
  run_split imgctl list -j -q
  [ "$status" -eq 0 ]
  valid
  [ "$(jget .schema)" = 1 ]
  [ "$(jget '.images | length')" = 0 ]
  # a run directory that records nothing is no image
  mkdir -p "$LIBIMG_RUNDIR/0123456789abcdef"
  run_split imgctl list -j
  [ "$(jget '.images | length')" = 0 ]
}

@test "issue 16 #5: imgctl --help names every command and option; the man page every option, command, state and JSON key of the schema" {
  man=$ROOT/man/imgctl.1
  run_split imgctl --help
  [ "$status" -eq 0 ]
  for c in list status send grow shrink compact snapshot merge stop discard-data no-zero-detect; do
    [[ "$out" == *"$c"* ]] || { echo "--help: no $c"; false; }
    grep -q "^\.B[IR]* *${c//-/\\\\-}\b" "$man" || grep -q "\.B[IR]* .*${c//-/\\\\-}" "$man" ||
      { echo "imgctl.1: no $c"; false; }
  done
  for o in $(printf '%s\n' "$out" | grep -o -- '--[a-z-]*' | sort -u); do
    grep -q -- "${o//-/\\\\-}" "$man" || { echo "imgctl.1: no $o"; false; }
  done
  for s in serving failed busy unreachable stale; do
    grep -q "^\.B $s$" "$man" || { echo "imgctl.1: no state $s"; false; }
    [[ "$(jq -r '.["$defs"].entry.properties.state.enum | join(" ")' "$ROOT/tools/schema/imgctl.json")" == *"$s"* ]]
  done
  keys=$(jq -r '[.. | objects | .properties? // empty | keys[]] | unique | .[]' "$ROOT/tools/schema/imgctl.json")
  [ "$(printf '%s\n' "$keys" | wc -l)" -gt 30 ]
  for k in $keys; do
    grep -q "\.B[IR]* *$k\b" "$man" || { echo "imgctl.1: no key $k"; false; }
  done
  # every key has a description
  [ "$(jq '[.. | objects | .properties? // empty | to_entries[] | select(.value.description == null)] | length' "$ROOT/tools/schema/imgctl.json")" = 0 ]
}

@test "red2: imgctl list: a FIFO in a run directory does not hang it (read as absent)" {
  mkdir -p "$LIBIMG_RUNDIR/0123456789abcdef"
  mkfifo "$LIBIMG_RUNDIR/0123456789abcdef/image" "$LIBIMG_RUNDIR/0123456789abcdef/pid"
  timeout 10 "$BIN/imgctl" list -j >"$T/o" && st=0 || st=$?
  [ "$st" -eq 0 ] || { echo "status $st"; false; }
  output=$(cat "$T/o")
  [ "$(jget '.images | length')" -le 1 ]
  [ "$(jget '.images[0].filename // "none"')" = none ]
}

@test "red2: imgctl list does not follow a symbolic link planted as a state key (no other file's content shown)" {
  echo "secret-content" >"$T/secret"
  mkdir -p "$LIBIMG_RUNDIR/0123456789abcdef"
  ln -s "$T/secret" "$LIBIMG_RUNDIR/0123456789abcdef/mountpoint"
  ln -s "$T/secret" "$LIBIMG_RUNDIR/0123456789abcdef/image"
  echo 1 >"$LIBIMG_RUNDIR/0123456789abcdef/pid"
  run_split imgctl list -j
  [ "$status" -eq 0 ]
  [[ "$out" != *secret-content* ]] || { echo "$out"; false; }
  run_split imgctl list
  [[ "$out" != *secret-content* ]] || { echo "$out"; false; }
}
