#!/usr/bin/env bats
# issue 16: -j/--json from every tool: one document on stdout and nothing
# else, "schema": 1 first, the same keys whatever the path (keys that do not
# apply are null), -j -q still prints it, every key in tools/schema/TOOL.json
# and the tool's man page.  (Online paths: tests/online/json.bats.)

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

SCHEMA_DIR=$ROOT/tools/schema
CHECK=$ROOT/tests/helpers/json_check.py

# json_doc TOOL ARGS...: runs the tool (run_split) and checks that stdout is
# exactly one JSON value and that every object at the top (or in a top-level
# array) starts with "schema": 1.
json_doc() {
  run_split "$@"
  [ "$status" -eq 0 ] || { echo "$1 exited $status: $err"; return 1; }
  [ "$(printf '%s\n' "$out" | jq -s length)" = 1 ] || { echo "not one JSON value: $out"; return 1; }
  [ "$(printf '%s\n' "$out" | jq -r 'if type == "array" then .[] else . end
                                     | keys_unsorted[0] + "=" + (.schema | tostring)' | sort -u)" = "schema=1" ] ||
    { echo "an object does not start with \"schema\": 1: $out"; return 1; }
}

# keys_are FILTER KEY...: the sorted keys of the object FILTER picks from
# $output are exactly KEY...
keys_are() {
  local f=$1; shift
  local want got
  want=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
  got=$(printf '%s\n' "$output" | jq -r "$f | keys[]" | sort | tr '\n' ' ')
  [ "$got" = "$want" ] || { echo "keys: $got"; echo "want: $want"; return 1; }
}

# validate TOOL: $output against tools/schema/TOOL.json.
validate() {
  printf '%s\t%s\n' "$1" "$(printf '%s' "$output" | jq -c .)" >"$BATS_TEST_TMPDIR/doc.log"
  run python3 "$CHECK" "$BATS_TEST_TMPDIR/doc.log" "$SCHEMA_DIR"
  [ "$status" -ne 77 ] || skip "$output"
  [ "$status" -eq 0 ] || { echo "$output"; return 1; }
}

MKIMG_KEYS="schema filename virtual_size cluster_size backing filesystem from copied_bytes"

@test "issue 16 #3: mkimg -j prints the image made (filename, virtual_size, cluster_size, backing)" {
  json_doc mkimg -j a.img 64M
  keys_are . $MKIMG_KEYS
  [ "$(jget .filename)" = a.img ]
  [ "$(jget .virtual_size)" = $((64 * M)) ]
  [ "$(jget .cluster_size)" = $M ]
  [ "$(jget .backing)" = null ]
  [ "$(jget .filesystem)" = null ]
  validate mkimg
  # a clone without SIZE: the base's size, the reference as stored
  json_doc mkimg -j --cluster-size 64K --backing a.img b.img
  keys_are . $MKIMG_KEYS
  [ "$(jget .virtual_size)" = $((64 * M)) ]
  [ "$(jget .cluster_size)" = $((64 * K)) ]
  [ "$(jget .backing)" = a.img ]
  validate mkimg
}

@test "issue 16 #3: mkimg -j --fs: the same keys, with the filesystem read back" {
  command -v mke2fs >/dev/null || skip "no mke2fs"
  mkdir tree; echo hello >tree/f
  json_doc mkimg -j --fs ext4 --label data --from tree f.img 64M
  keys_are . $MKIMG_KEYS
  [ "$(jget .filesystem.type)" = ext4 ]
  [ "$(jget .filesystem.label)" = data ]
  [ "$(jget .from)" = tree ]
  [ "$(jget .copied_bytes)" -gt 0 ]
  validate mkimg
}

@test "issue 16 #3: imgconvert -j prints the copy made, raw to libimg and back" {
  make_raw a.raw
  json_doc imgconvert -j -c a.raw a.img
  keys_are . schema source source_format destination destination_format virtual_size \
    copied_bytes cluster_size compressed
  [ "$(jget .source_format)" = raw ]
  [ "$(jget .destination_format)" = libimg ]
  [ "$(jget .virtual_size)" = $((16 * M)) ]
  [ "$(jget .compressed)" = true ]
  [ "$(jget .cluster_size)" = $M ]
  validate imgconvert
  json_doc imgconvert -j -F libimg -O raw a.img b.raw
  [ "$(jget .destination_format)" = raw ]
  [ "$(jget .cluster_size)" = null ]
  validate imgconvert
}

GROW_KEYS="schema filename old_size new_size online device filesystem filesystem_size filesystem_grown"

@test "issue 16 #3: growimg -j: the keys of the online grow, with or without a filesystem" {
  "$BIN/mkimg" -q e.img 64M
  json_doc growimg -j e.img 128M
  keys_are . $GROW_KEYS
  [ "$(jget .online)" = false ]
  [ "$(jget .device)" = null ]
  [ "$(jget .filesystem)" = null ]
  [ "$(jget .new_size)" = $((128 * M)) ]
  validate growimg
  command -v mke2fs >/dev/null || skip "no mke2fs"
  "$BIN/mkimg" -q --fs ext4 f.img 64M
  json_doc growimg -j f.img 96M
  keys_are . $GROW_KEYS
  [ "$(jget .filesystem)" = ext4 ]
  [ "$(jget .filesystem_size)" = $((96 * M)) ]
  [ "$(jget .filesystem_grown)" = true ]
  validate growimg
}

SHRINK_KEYS="schema filename old_size new_size online balloon filesystem filesystem_old_size
  filesystem_size filesystem_min_size fs_trim_bytes balloon_removed"

@test "issue 16 #3: shrinkimg -j: the same keys with and without a filesystem step (null where none)" {
  "$BIN/mkimg" -q e.img 64M
  json_doc shrinkimg -j e.img 32M
  keys_are . $SHRINK_KEYS
  [ "$(jget .filesystem)" = null ]
  [ "$(jget .filesystem_size)" = null ]
  [ "$(jget .balloon)" = null ]
  [ "$(jget .new_size)" = $((32 * M)) ]
  validate shrinkimg
  command -v resize2fs >/dev/null || skip "no resize2fs"
  "$BIN/mkimg" -q --fs ext4 f.img 256M
  json_doc shrinkimg -j f.img 200M
  keys_are . $SHRINK_KEYS
  [ "$(jget .filesystem)" = ext4 ]
  [ "$(jget .filesystem_size)" = $((200 * M)) ]
  validate shrinkimg
}

@test "issue 16 #3: compact -j: every key present (fs_note null when there is nothing to say)" {
  "$BIN/mkimg" -q e.img 64M
  json_doc compact -j e.img
  keys_are . schema filename file_size_before file_size_after disk_usage_before disk_usage_after \
    reclaimed_bytes zero_clusters_freed clusters_moved clusters_compressed payloads_repacked \
    filesystem fs_trim fs_trim_bytes fs_trim_clusters fs_trim_punched fs_free_bytes fs_note online
  [ "$(jget .fs_note)" = null ]
  validate compact
}

@test "issue 16 #3: imginfo -j -q prints the JSON (it printed nothing)" {
  "$BIN/mkimg" -q a.img 64M
  "$BIN/mkimg" -q --backing a.img b.img
  json_doc imginfo -j -q b.img
  [ "$(jget .filename)" = b.img ]
  [ "$(jget .backing)" = a.img ]
  validate imginfo
  json_doc imginfo -j -q --backing-chain b.img
  [ "$(jget 'length')" = 2 ]
  [ "$(jget '.[1].backing')" = null ]
  validate imginfo
}

@test "issue 16 #3: imgcheck -j and -j -q print the same document" {
  "$BIN/mkimg" -q a.img 64M
  json_doc imgcheck -j a.img
  a=$out
  [ "$(jget .status)" = clean ]
  validate imgcheck
  json_doc imgcheck -j -q a.img
  [ "$out" = "$a" ]
}

@test "issue 16 #3: imgmap -j -q prints the map (it printed nothing), schema in every run" {
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw a.img
  json_doc imgmap -j -q a.img
  [ "$(jget 'length')" -gt 1 ]
  [ "$(jget '[.[] | .length] | add')" = $((16 * M)) ]
  validate imgmap
}

@test "issue 16 #3: imgsnap -j: create, list, merge, rebase, flatten and template print JSON, also with -q" {
  "$BIN/mkimg" -q a.img 64M
  "$BIN/mkimg" -q --backing a.img c.img
  json_doc imgsnap -j -q create c.img
  keys_are . schema command filename online snapshot
  [ "$(jget .command)" = create ]
  [ "$(jget .online)" = false ]
  [ "$(jget .snapshot)" = c.img.snap1 ]
  validate imgsnap
  json_doc imgsnap -j -q list c.img
  [ "$(jget 'length')" = 3 ]
  [ "$(jget '.[0].backing_chain_error')" = null ]
  validate imgsnap
  # offline merge: the keys of the online merge (tests/online/json.bats)
  json_doc imgsnap -j merge c.img
  keys_are . schema command filename online merged_into
  [ "$(jget .merged_into)" = c.img.snap1 ]
  validate imgsnap
  json_doc imgsnap -j rebase c.img ""
  keys_are . schema command filename online backing
  [ "$(jget .backing)" = null ]
  validate imgsnap
  json_doc imgsnap -j rebase -u c.img a.img
  [ "$(jget .backing)" = a.img ]
  json_doc imgsnap -j flatten c.img
  keys_are . schema command filename online backing
  [ "$(jget .command)" = flatten ]
  validate imgsnap
  json_doc imgsnap -j template a.img
  keys_are . schema command filename online template
  [ "$(jget .template)" = true ]
  validate imgsnap
  json_doc imgsnap -j template --clear a.img
  [ "$(jget .template)" = false ]
}

@test "issue 16 #3: -j puts nothing but the document on stdout (human text goes nowhere)" {
  "$BIN/mkimg" -q a.img 64M
  # each of these printed a line of text with -j, or nothing at all
  for cmd in "mkimg -j n.img 1M" "imgconvert -j -F libimg a.img n2.img" "imgsnap -j create a.img" \
             "imgsnap -j merge a.img" "imgsnap -j template a.img" "imgsnap -j template --clear a.img"; do
    # shellcheck disable=SC2086
    json_doc $cmd
  done
}

@test "issue 16 #3: every tool's --help lists -j, --json" {
  for t in $TOOLS; do
    run "$BIN/$t" --help
    [ "$status" -eq 0 ]
    printf '%s\n' "$output" | grep -q -- '-j, --json' || { echo "$t --help: no -j, --json"; return 1; }
  done
}

@test "issue 16 #3: LIBIMG_TEST_JSON_LOG gets each document as one line \"TOOL<TAB>JSON\"" {
  LIBIMG_TEST_JSON_LOG=$T/log "$BIN/mkimg" -j a.img 64M >/dev/null
  LIBIMG_TEST_JSON_LOG=$T/log "$BIN/imgmap" -j a.img >/dev/null
  LIBIMG_TEST_JSON_LOG=$T/log "$BIN/mkimg" -q b.img 64M    # no -j: nothing
  [ "$(wc -l <"$T/log")" = 2 ]
  [ "$(cut -f1 "$T/log" | tr '\n' ' ')" = "mkimg imgmap " ]
  [ "$(sed -n 1p "$T/log" | cut -f2- | jq -r .virtual_size)" = $((64 * M)) ]
  [ "$(sed -n 2p "$T/log" | cut -f2- | jq -r '.[0].schema')" = 1 ]
}

@test "issue 16 #3: every tool has a schema; schemas describe every key, are closed, and the man pages name every key" {
  for t in $TOOLS; do
    [ -f "$SCHEMA_DIR/$t.json" ] || { echo "no $SCHEMA_DIR/$t.json"; return 1; }
  done
  [ -f "$SCHEMA_DIR/error.json" ]
  run python3 "$CHECK" --schemas "$SCHEMA_DIR" "$ROOT/man"
  [ "$status" -ne 77 ] || skip "$output"
  echo "$output"
  [ "$status" -eq 0 ]
}

@test "issue 16 #3: the checker fails on a key the schema does not have, naming the tool and the key" {
  printf 'mkimg\t{"schema":1,"filename":"a","virtual_size":1,"cluster_size":1,"backing":null,"filesystem":null,"from":null,"copied_bytes":null,"surprise":1}\n' >log
  run python3 "$CHECK" log "$SCHEMA_DIR"
  [ "$status" -ne 77 ] || skip "$output"
  [ "$status" -eq 1 ]
  [[ $output == *"mkimg"*"surprise"* ]]
  printf 'nosuchtool\t{"schema":1}\n' >log
  run python3 "$CHECK" log "$SCHEMA_DIR"
  [ "$status" -eq 1 ]
  [[ $output == *"nosuchtool: no schema"* ]]
}

@test "red2: LIBIMG_TEST_JSON_LOG does not follow a symbolic link (the file it points to is untouched)" {
  "$BIN/mkimg" -q a.img 64M
  echo secret >target
  ln -s target link
  LIBIMG_TEST_JSON_LOG=$T/link run_split imginfo -j a.img
  [ "$status" -eq 0 ]
  [ "$(cat target)" = secret ]
}

@test "red2: LIBIMG_TEST_JSON_LOG naming a FIFO nobody reads does not hang the tool" {
  "$BIN/mkimg" -q a.img 64M
  mkfifo ff
  LIBIMG_TEST_JSON_LOG=$T/ff timeout 10 "$BIN/imginfo" -j a.img >/dev/null && st=0 || st=$?
  [ "$st" -eq 0 ]
}

@test "red2: -j whose document cannot be written (stdout full or closed) is a failure, not 0" {
  "$BIN/mkimg" -q a.img 64M
  run_split imginfo -j a.img
  [ "$status" -eq 0 ]
  "$BIN/imginfo" -j a.img >/dev/full 2>"$T/e" && st=0 || st=$?
  [ "$st" -eq 1 ] || { echo "stdout full: $st"; return 1; }
  grep -q 'standard output' "$T/e"
  "$BIN/imginfo" -j a.img >&- 2>"$T/e" && st=0 || st=$?
  [ "$st" -eq 1 ] || { echo "stdout closed: $st"; return 1; }
  "$BIN/mkimg" -j b.img 64M >/dev/full 2>/dev/null && st=0 || st=$?
  [ "$st" -eq 1 ]
}
