#!/usr/bin/env bats
# Clone identity (issue 16) without root: mkimg --backing gives an ext2/3/4
# clone a new UUID through the library; xfs and btrfs need root (their own
# tools on the attached clone), so an unprivileged clone of an xfs base is
# refused unless --keep-fs-uuid, and leaves nothing.  Usage errors.
# (With root: tests/online/clones.bats.)

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

fs_uuid() { "$BIN/imginfo" -j "$1" | jq -r '.filesystem.uuid'; }

@test "issue 16 clone identity: an unprivileged user's ext4 clone gets a new UUID; the base is unchanged" {
  public_dir
  cd "$PUBDIR"
  "$BIN/mkimg" -q --fs ext4 base.img 64M
  chmod a-w base.img
  sum=$(sha256sum < base.img)
  chown -R 65534:65534 "$PUBDIR"
  run_unprivileged mkimg --backing base.img c.img
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [ "$(fs_uuid c.img)" != "$(fs_uuid base.img)" ]
  [[ "$output" == *"UUID $(fs_uuid c.img)"* ]]
  run_unprivileged mkimg --backing base.img --label tiny c2.img
  [ "$status" -eq 0 ]
  [ "$("$BIN/imginfo" -j c2.img | jq -r .filesystem.label)" = tiny ]
  [ "$(sha256sum < base.img)" = "$sum" ]
}

@test "issue 16 clone identity: an unprivileged clone of an xfs base is refused unless --keep-fs-uuid; nothing is left" {
  command -v mkfs.xfs >/dev/null || skip "mkfs.xfs is not installed"
  [ "$(id -u)" -eq 0 ] || skip "needs root to drop it"
  public_dir
  cd "$PUBDIR"
  "$BIN/mkimg" -q --fs xfs base.img 320M
  chown -R 65534:65534 "$PUBDIR"
  run_unprivileged mkimg --backing base.img c.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"giving the clone's xfs filesystem a new UUID needs root"* ]]
  [[ "$output" == *"no clone was made"* ]]
  [ ! -e c.img ]
  [ -z "$(ls -A | grep '^\.')" ]
  run_unprivileged mkimg --backing base.img --keep-fs-uuid c.img
  [ "$status" -eq 0 ]
  [[ "$output" == *"(the base's UUID)"* ]]
  [ "$(fs_uuid c.img)" = "$(fs_uuid base.img)" ]
}

@test "issue 16 clone identity: usage errors of --fs-uuid, --keep-fs-uuid and --label" {
  "$BIN/mkimg" -q --fs ext4 base.img 64M
  run "$BIN/mkimg" --fs-uuid 0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9 x.img 64M
  [ "$status" -ne 0 ]
  [[ "$output" == *"need --backing"* ]]
  run "$BIN/mkimg" --keep-fs-uuid x.img 64M
  [ "$status" -ne 0 ]
  run "$BIN/mkimg" --backing base.img --keep-fs-uuid --fs-uuid 0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9 x.img
  [ "$status" -ne 0 ]
  [[ "$output" == *"cannot be combined"* ]]
  run "$BIN/mkimg" --backing base.img --fs-uuid 0f1e2d3c-4b5a-4978-8695 x.img
  [ "$status" -ne 0 ]
  [[ "$output" == *"invalid --fs-uuid"* ]]
  run "$BIN/mkimg" --backing base.img --label seventeen-bytes!! x.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"at most 16 bytes"* ]]
  [ ! -e x.img ]
  [ -z "$(ls -A | grep '^\.')" ]
}
