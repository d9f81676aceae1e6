#!/usr/bin/env bats
# Issue 16, as a new user's provisioning script meets the tools: decisions
# taken on exit statuses and JSON only (libimg(7)).

load helpers

setup() {
  common_setup
  export LIBIMG_RUNDIR=$BATS_TEST_TMPDIR/run
}
teardown() {
  [ -n "${MNT:-}" ] && umount -l "$MNT" 2>/dev/null
  common_teardown
}

@test "issue 16 newuser: an existing file is EEXIST in the JSON error object (mkimg, imgconvert)" {
  "$BIN/mkimg" -q a.img 16M
  "$BIN/mkimg" -q b.img 16M
  run_split mkimg -j a.img 16M
  [ "$status" -eq 1 ]
  [ "$(jq -r .error.errno_name <<<"$output")" = EEXIST ]
  [ "$(jq -r .error.file <<<"$output")" = a.img ]
  run_split mkimg -j --backing b.img a.img
  [ "$status" -eq 1 ]
  [ "$(jq -r .error.errno_name <<<"$output")" = EEXIST ]
  [ "$(jq -r .error.file <<<"$output")" = a.img ]
  run_split imgconvert -j b.img a.img
  [ "$status" -eq 1 ]
  [ "$(jq -r .error.errno_name <<<"$output")" = EEXIST ]
  [ "$(jq -r .error.file <<<"$output")" = a.img ]
}

@test "issue 16 newuser: mkimg --fs on a full host exits 8 (ENOSPC), not 1, and leaves nothing" {
  [ "$(id -u)" -eq 0 ] || skip "needs root to mount a tmpfs"
  MNT=$T/mnt
  mkdir -p "$MNT"
  mount -t tmpfs -o size=4M libimg-newuser "$MNT" 2>/dev/null || { MNT=; skip "cannot mount a tmpfs"; }
  head -c 8M /dev/zero > "$MNT/filler" 2>/dev/null || true
  for fs in ext4 btrfs; do
    run_split mkimg -j --fs $fs "$MNT/a.img" 256M
    [ "$status" -eq 8 ] || { echo "$fs: exit $status: $err"; false; }
    [ "$(jq -r .error.errno_name <<<"$output")" = ENOSPC ]
    [ "$(jq -r .error.file <<<"$output")" = "$MNT/a.img" ]
    [ "$(ls -A "$MNT")" = filler ]
  done
  umount "$MNT"
  MNT=
}

@test "issue 16 newuser: mkimg --help lists --fs-uuid and --allow-backing-path as options (bash completion offers them)" {
  [ -f /usr/share/bash-completion/bash_completion ] ||
    skip "bash-completion is needed (scripts/deps.sh installs it)"
  opts=$(PATH=$BIN:$PATH bash --norc --noprofile -c '
    source /usr/share/bash-completion/bash_completion
    source "$1"
    COMP_WORDS=(mkimg --); COMP_CWORD=1; COMP_LINE="mkimg --"; COMP_POINT=8
    COMPREPLY=()
    _libimg mkimg -- mkimg
    printf "%s\n" "${COMPREPLY[@]}"' _ "$ROOT/completion/libimg.bash")
  for o in --backing --fs-uuid --keep-fs-uuid --allow-backing-path --label; do
    grep -qx -- "$o" <<<"$opts" || { echo "mkimg --: no $o in: $opts"; false; }
  done
}

@test "issue 16 newuser: imgconvert onto its own source says so (1, EINVAL), not 'in use' (75), with or without -f" {
  "$BIN/mkimg" -q a.img 16M
  s0=$(sha256sum < a.img)
  for f in "" -f; do
    run_split imgconvert -j $f -F libimg a.img a.img
    [ "$status" -eq 1 ] || { echo "imgconvert $f: status $status: $err"; false; }
    [ "$(jget .error.errno_name)" = EINVAL ]
    [[ "$err" == *"same file as the source"* ]]
    [ "$(sha256sum < a.img)" = "$s0" ]
  done
}

@test "issue 16 newuser: mkimg --backing with an absolute BASE beside FILE stores its name (the clone works); one elsewhere is still refused" {
  "$BIN/mkimg" -q base.img 16M
  run_split mkimg -j --backing "$PWD/base.img" "$PWD/ct1.img"
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ "$(jget .backing)" = base.img ]
  [ "$(info ct1.img backing)" = base.img ]
  "$BIN/imgcheck" -q ct1.img
  mkdir o
  run_split mkimg -j --backing "$PWD/base.img" o/ct2.img
  [ "$status" -eq 1 ] && [ "$(jget .error.errno_name)" = EPERM ]
  [ ! -e o/ct2.img ]
}
