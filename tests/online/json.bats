#!/usr/bin/env bats
# issue 16: -j/--json of the online paths: the same keys as offline
# (shrinkimg, growimg, compact, imgsnap create and merge), and -j from
# imgattach, imgmount, imgumount, imgdetach and imgserve, also with -q.

load helpers

setup() { online_setup; }
teardown() { online_teardown; }

SCHEMA_DIR=$ROOT/tools/schema

# json_doc TOOL ARGS...: run_split, then stdout is exactly one JSON object
# whose first key is "schema": 1.
json_doc() {
  run_split "$@"
  [ "$status" -eq 0 ] || { echo "$1 exited $status: $err"; return 1; }
  [ "$(printf '%s\n' "$out" | jq -s length)" = 1 ] || { echo "not one JSON value: $out"; return 1; }
  [ "$(printf '%s\n' "$out" | jq -r 'keys_unsorted[0] + "=" + (.schema | tostring)')" = schema=1 ] ||
    { echo "does not start with \"schema\": 1: $out"; return 1; }
}
jget() { printf '%s\n' "$output" | jq -r "$1"; }
keys_of() { printf '%s\n' "$output" | jq -r 'keys[]' | sort | tr '\n' ' '; }
validate() {
  printf '%s\t%s\n' "$1" "$(printf '%s' "$output" | jq -c .)" >"$BATS_TEST_TMPDIR/doc.log"
  run python3 "$ROOT/tests/helpers/json_check.py" "$BATS_TEST_TMPDIR/doc.log" "$SCHEMA_DIR"
  [ "$status" -ne 77 ] || skip "$output"
  [ "$status" -eq 0 ] || { echo "$output"; return 1; }
}

@test "issue 16 #3: shrinkimg -j online has the keys of shrinkimg -j offline (it had 5 against 8)" {
  mkimg -q --fs ext4 a.img 1G
  mkimg -q b.img 64M
  json_doc shrinkimg -j b.img 32M
  offline=$(keys_of)
  mkdir mnt
  imgmount -q a.img mnt
  # ext4 while mounted: a balloon, the virtual size unchanged
  json_doc shrinkimg -j a.img 512M
  [ "$(keys_of)" = "$offline" ]
  [ "$(jget .online)" = true ]
  [ "$(jget .balloon)" = $((512 * M)) ]
  [ "$(jget .new_size)" = $G ]
  [ "$(jget .filesystem_size)" = null ]
  validate shrinkimg
  # the current size: nothing to do, the same keys
  json_doc shrinkimg -j -q a.img 1G
  [ "$(keys_of)" = "$offline" ]
  imgumount -q mnt
  # offline, the shrink completes: the same keys again
  json_doc shrinkimg -j a.img 512M
  [ "$(keys_of)" = "$offline" ]
  [ "$(jget .balloon_removed)" = true ]
  [ "$(jget .filesystem_size)" = $((512 * M)) ]
  validate shrinkimg
  assert_nothing_left
}

@test "issue 16 #3: imgsnap create and merge -j online have the keys of offline (merge printed text offline)" {
  mkimg -q a.img 64M
  mkimg -q b.img 64M
  json_doc imgsnap -j create b.img
  create_off=$(keys_of)
  json_doc imgsnap -j merge b.img
  merge_off=$(keys_of)
  [ "$(jget .online)" = false ]
  imgattach -q a.img
  json_doc imgsnap -j create a.img
  [ "$(keys_of)" = "$create_off" ]
  [ "$(jget .online)" = true ]
  [ "$(jget .command)" = create ]
  validate imgsnap
  json_doc imgsnap -j -q merge a.img
  [ "$(keys_of)" = "$merge_off" ]
  [ "$(jget .online)" = true ]
  [ "$(jget .command)" = merge ]
  validate imgsnap
  imgdetach -q a.img
  assert_nothing_left
}

@test "issue 16 #3: growimg -j and compact -j online have the keys of offline" {
  command -v mkfs.xfs >/dev/null || skip "no mkfs.xfs"
  mkimg -q --fs xfs a.img 512M
  mkimg -q b.img 64M
  json_doc growimg -j b.img 128M
  grow_off=$(keys_of)
  json_doc compact -j b.img
  compact_off=$(keys_of)
  mkdir mnt
  imgmount -q a.img mnt
  json_doc growimg -j a.img 600M
  [ "$(keys_of)" = "$grow_off" ]
  [ "$(jget .online)" = true ]
  [[ "$(jget .device)" == /dev/loop* ]]
  [ "$(jget .filesystem)" = xfs ]
  [ "$(jget .filesystem_grown)" = true ]
  validate growimg
  json_doc compact -j -q a.img
  [ "$(keys_of)" = "$compact_off" ]
  [ "$(jget .online)" = true ]
  validate compact
  imgumount -q mnt
  assert_nothing_left
}

@test "issue 16 #3: imgattach, imgmount, imgumount and imgdetach -j (-q too) print what they did" {
  mkimg -q --fs ext4 a.img 64M
  mkdir mnt
  json_doc imgmount -j -q a.img mnt
  [ "$(jget .mountpoint)" = "$T/mnt" ]
  dev=$(jget .device)
  pid=$(jget .pid)
  validate imgmount
  json_doc imgumount -j -q mnt
  [ "$(keys_of)" = "device filename mountpoint pid schema " ]
  [ "$(jget .filename)" = "$T/a.img" ]
  [ "$(jget .mountpoint)" = "$T/mnt" ]
  [ "$(jget .device)" = "$dev" ]
  [ "$(jget .pid)" = "$pid" ]
  validate imgumount
  json_doc imgattach -j -q a.img
  dev=$(jget .device)
  [[ $dev == /dev/loop* ]]
  validate imgattach
  json_doc imgdetach -j "$dev"
  [ "$(keys_of)" = "device filename mountpoint pid schema " ]
  [ "$(jget .device)" = "$dev" ]
  [ "$(jget .mountpoint)" = null ]
  validate imgdetach
  assert_nothing_left
}

@test "issue 16 #3: imgserve -j -d prints the export once it is up, then goes to the background" {
  mkimg -q a.img 64M
  touch export
  json_doc imgserve -j -d a.img export
  [ "$(jget .export)" = "$T/export" ]
  [ "$(jget .daemon)" = true ]
  [ "$(jget .pid)" = "$(daemon_pid)" ]
  [ -S "$(jget .control_socket)" ]
  validate imgserve
  imgumount -q a.img
  assert_nothing_left
}
