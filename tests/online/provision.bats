#!/usr/bin/env bats
# Issue 16: a provisioning script as a platform engineer writes it: a base
# image from a directory, 10 clones over it, all mounted, data per clone,
# grow, shrink, snapshot + merge, compact, unmount, check.  It decides only
# on exit statuses and JSON (-j): no test here matches human text (stderr
# is kept in a file and shown when a step fails, never matched).

load helpers

setup() {
  online_setup
  command -v jq >/dev/null || skip "jq is needed"
  N=10
  BASE_SIZE=$((256 * M))
}
teardown() { online_teardown; }

# jrun TOOL ARGS...: runs a step of the script: $rc its exit status, $json
# its stdout; its stderr goes to $BATS_TEST_TMPDIR/stderr, printed (not
# matched) when the test fails.
jrun() {
  rc=0
  json=$("$@" 2>"$BATS_TEST_TMPDIR/stderr") || rc=$?
  if [ "$rc" -ne 0 ]; then
    { echo "$* -> exit $rc"; cat "$BATS_TEST_TMPDIR/stderr"; } >&2
  fi
  return 0
}

# jis FILTER...: the JSON of the last step satisfies the jq FILTER (with
# jq's own arguments before it, e.g. --arg).
jis() {
  jq -e "$@" <<<"$json" >/dev/null || { echo "JSON fails $*: $json" >&2; return 1; }
}

# A base tree as a platform engineer keeps it in git: a few files.
make_tree() {
  mkdir -p tree/etc tree/srv tree/usr/bin
  echo base > tree/etc/role
  head -c $((2 * M)) /dev/urandom > tree/srv/blob
  printf '#!/bin/sh\necho hi\n' > tree/usr/bin/hello
  chmod 755 tree/usr/bin/hello
  (cd tree && find . -type f -exec sha256sum {} +) > tree.sums
}

# The base: an ext4 image holding the tree, marked a template, and 10 clones.
make_base_and_clones() {
  make_tree
  jrun mkimg -j --fs ext4 --from tree base.img $BASE_SIZE
  [ "$rc" -eq 0 ]
  jis --argjson s $BASE_SIZE '.virtual_size == $s and .filesystem.type == "ext4"
                              and .copied_bytes > 0'
  base_uuid=$(jq -r .filesystem.uuid <<<"$json")
  jrun imgsnap -j template base.img
  [ "$rc" -eq 0 ]
  jis '.command == "template" and .template == true'
  jrun imginfo -j base.img
  [ "$rc" -eq 0 ]
  jis --argjson s $BASE_SIZE '.virtual_size == $s and .filesystem.type == "ext4"
                              and .backing == null and .dirty == false'
  sha256sum < base.img > base.img.sum
  for i in $(seq $N); do
    jrun mkimg -j --backing base.img ct$i.img
    [ "$rc" -eq 0 ]
    # each clone's filesystem has its own UUID (mounted side by side, by UUID)
    jis --arg u "$base_uuid" '.backing == "base.img" and .filesystem.type == "ext4"
                              and .filesystem.uuid != $u'
    jrun imginfo -j ct$i.img
    [ "$rc" -eq 0 ]
    jis --argjson s $BASE_SIZE '.virtual_size == $s and .backing_depth == 1
                                and .filesystem.type == "ext4" and .in_use == null'
  done
}

@test "issue 16: provisioning 10 containers over one base, deciding on exit statuses and JSON only" {
  make_base_and_clones
  jrun imgsnap -j list ct1.img
  [ "$rc" -eq 0 ]
  jis 'length == 2 and .[1].template == true and .[0].template == false'

  # mount all
  declare -A dev pid
  for i in $(seq $N); do
    mkdir -p mnt/ct$i
    jrun imgmount -j ct$i.img mnt/ct$i
    [ "$rc" -eq 0 ]
    jis --arg m "$T/mnt/ct$i" '.mountpoint == $m and .filesystem == "ext4"
                               and (.pid | type == "number") and (.device | startswith("/dev/loop"))'
    dev[$i]=$(jq -r .device <<<"$json")
    pid[$i]=$(jq -r .pid <<<"$json")
    kill -0 "${pid[$i]}"
    jrun imginfo -j ct$i.img
    [ "$rc" -eq 0 ]
    jis --argjson p "${pid[$i]}" --arg m "$T/mnt/ct$i" \
      '.in_use.pid == $p and .in_use.mountpoint == $m and .in_use.running == true'
  done
  # ten different daemons and loop devices
  [ "$(printf '%s\n' "${pid[@]}" | sort -u | wc -l)" -eq $N ]
  [ "$(printf '%s\n' "${dev[@]}" | sort -u | wc -l)" -eq $N ]

  # per-clone data: each clone sees the base's tree and only its own data
  for i in $(seq $N); do
    (cd mnt/ct$i && sha256sum -c --quiet "$T/tree.sums")
    echo "ct$i" > mnt/ct$i/etc/hostname
    head -c $((4 * M)) /dev/urandom > mnt/ct$i/srv/data
    (cd mnt/ct$i && sha256sum etc/hostname srv/data) > ct$i.sums
  done
  sync
  for i in $(seq $N); do
    (cd mnt/ct$i && sha256sum -c --quiet "$T/ct$i.sums")
    [ "$(cat mnt/ct$i/etc/hostname)" = "ct$i" ]
  done

  # grow ct1 online to 384 MiB: the image and its loop device grow; the
  # mounted ext4 grows too when the process may resize it (else: partial,
  # completed offline below)
  grow_offline=
  jrun growimg -j ct1.img 384M
  case $rc in
    0) jis --argjson s $((384 * M)) '.new_size == $s' ;;
    7) jis '.error.status == 7'; grow_offline=1 ;;
    *) false ;;
  esac
  [ "$(blockdev --getsize64 "${dev[1]}")" -eq $((384 * M)) ]
  jrun imginfo -j ct1.img
  [ "$rc" -eq 0 ]
  jis --argjson s $((384 * M)) '.virtual_size == $s'

  # shrink ct2 to 200 MiB: online, ext4 gets a balloon that the offline
  # shrinkimg below completes (a filesystem that shrinks online: done now)
  jrun shrinkimg -j ct2.img 200M
  [ "$rc" -eq 0 ]
  jis --argjson s $((200 * M)) '.new_size == $s or .balloon > 0'
  shrink_offline=$(jq -r --argjson s $((200 * M)) 'if .new_size == $s then "" else 1 end' <<<"$json")
  (cd mnt/ct2 && sha256sum -c --quiet "$T/ct2.sums")

  # snapshot ct3, write, merge the snapshot back
  jrun imgsnap -j create ct3.img
  [ "$rc" -eq 0 ]
  snap=$(jq -r .snapshot <<<"$json")
  [ -n "$snap" ] && [ "$snap" != null ]
  jrun imgsnap -j list ct3.img
  [ "$rc" -eq 0 ]
  jis 'length == 3 and .[2].template == true'
  echo after-snapshot > mnt/ct3/etc/after
  sync
  jrun imgsnap -j merge ct3.img
  [ "$rc" -eq 0 ]
  jis --arg s "$snap" '.merged_into == $s'
  jrun imgsnap -j list ct3.img
  [ "$rc" -eq 0 ]
  jis 'length == 2 and .[1].template == true'
  [ "$(cat mnt/ct3/etc/after)" = after-snapshot ]

  # compact ct4 after deleting a file (discard is on: the space is free)
  head -c $((32 * M)) /dev/urandom > mnt/ct4/srv/scratch
  sync
  jrun imginfo -j ct4.img
  before=$(jq -r .disk_usage <<<"$json")
  rm mnt/ct4/srv/scratch
  sync
  jrun compact -j ct4.img
  [ "$rc" -eq 0 ]
  jis '.file_size_after <= .file_size_before'
  jrun imginfo -j ct4.img
  [ "$rc" -eq 0 ]
  jis --argjson b "$before" --argjson m $((16 * M)) '.disk_usage <= $b - $m'
  (cd mnt/ct4 && sha256sum -c --quiet "$T/ct4.sums")

  # unmount all
  for i in $(seq $N); do
    jrun imgumount -j mnt/ct$i
    [ "$rc" -eq 0 ]
    jis --arg m "$T/mnt/ct$i" '.mountpoint == $m'
    jrun imginfo -j ct$i.img
    [ "$rc" -eq 0 ]
    jis '.in_use == null and .dirty == false'
  done
  assert_nothing_left

  # offline: complete what the online steps could not
  if [ -n "$grow_offline" ]; then
    jrun growimg -j ct1.img 384M
    [ "$rc" -eq 0 ]
  fi
  jrun imginfo -j ct1.img
  jis --argjson s $((384 * M)) '.virtual_size == $s and .filesystem.size == $s'
  if [ -n "$shrink_offline" ]; then
    jrun shrinkimg -j ct2.img 200M
    [ "$rc" -eq 0 ]
    jis --argjson s $((200 * M)) '.new_size == $s'
  fi
  jrun imginfo -j ct2.img
  jis --argjson s $((200 * M)) '.virtual_size == $s and .filesystem.size == $s'

  # check all, and the base
  for f in base.img ct*.img; do
    jrun imgcheck -j "$f"
    [ "$rc" -eq 0 ]
    jis '.status == "clean" and .corruptions == 0 and .leaks == 0 and .check_errors == 0'
  done
  [ "$(sha256sum < base.img)" = "$(cat base.img.sum)" ]

  # a last look, read-only: every clone kept its data and the base's tree
  for i in $(seq $N); do
    jrun imgmount -j -r ct$i.img mnt/ct$i
    [ "$rc" -eq 0 ]
    (cd mnt/ct$i && sha256sum -c --quiet "$T/ct$i.sums" && sha256sum -c --quiet "$T/tree.sums")
    jrun imgumount -j mnt/ct$i
    [ "$rc" -eq 0 ]
  done
  assert_nothing_left
}

@test "issue 16: provisioning failure modes with a status today: in use (75), broken chain (4)" {
  N=2
  make_base_and_clones
  mkdir -p mnt/ct1 mnt/other
  jrun imgmount -j ct1.img mnt/ct1
  [ "$rc" -eq 0 ]
  echo mine > mnt/ct1/etc/hostname
  # a second mount of a mounted clone, a clone made over it with -f, the
  # base made anew under its clones: in use, nothing changed
  jrun imgmount -j ct1.img mnt/other
  [ "$rc" -eq 75 ]
  jrun mkimg -j -f --backing base.img ct1.img
  [ "$rc" -eq 75 ]
  jis '.error.status == 75 and .error.errno_name == "EBUSY"'
  jrun mkimg -j -f --fs ext4 base.img 64M
  [ "$rc" -eq 75 ]
  jis '.error.status == 75 and .error.file != null' 
  [ "$(sha256sum < base.img)" = "$(cat base.img.sum)" ]
  [ "$(cat mnt/ct1/etc/hostname)" = mine ]
  jrun imgumount -j mnt/ct1
  [ "$rc" -eq 0 ]
  # the base moved away: the clone is intact, its chain is not
  mv base.img base.moved
  jrun imginfo -j ct2.img
  [ "$rc" -eq 4 ]
  jrun imgmount -j ct2.img mnt/ct1
  [ "$rc" -ne 0 ]
  mv base.moved base.img
  jrun imgcheck -j ct2.img
  [ "$rc" -eq 0 ]
  assert_nothing_left
}

# The failure modes of libimg(7)'s exit status table: each
# expects the documented status and, with -j, exactly one JSON error object
# on stdout.

# jerr STATUS [ERRNO_NAME]: the last step exited STATUS and printed exactly
# one error object, with that status (and errno name).
jerr() {
  [ "$rc" -eq "$1" ] || { echo "exit $rc, want $1" >&2; return 1; }
  [ "$(jq -s length <<<"$json")" -eq 1 ]
  jis --argjson s "$1" '.schema == 1 and .error.status == $s
     and (.error.errno | type == "number" or . == null) and (.error.message | type == "string")'
  [ -z "${2:-}" ] || jis --arg e "$2" '.error.errno_name == $e'
}

@test "issue 16: not found (5): a missing image, base or mount point" {
  N=1
  make_base_and_clones
  mkdir mnt
  jrun imginfo -j missing.img
  jerr 5 ENOENT
  jis '.error.file == "missing.img"'
  jrun imgmount -j missing.img mnt
  jerr 5 ENOENT
  jrun growimg -j missing.img 1G
  jerr 5 ENOENT
  jrun imgcheck -j missing.img
  [ "$rc" -eq 1 ]         # imgcheck keeps qemu-img's codes: 1, the check could not run
  jrun mkimg -j --backing missing-base.img ct9.img
  jerr 5 ENOENT
  [ ! -e ct9.img ]
  jrun imgmount -j ct1.img no-such-dir
  jerr 5 ENOENT
  assert_nothing_left
}

@test "issue 16: not mounted (6): imgumount and imgdetach of what is not mounted or attached, harmless in a cleanup trap" {
  N=1
  make_base_and_clones
  mkdir mnt
  jrun imgumount -j mnt
  jerr 6
  jrun imgumount -j ct1.img
  jerr 6
  jrun imgdetach -j ct1.img
  jerr 6
  # mounted, unmounted, unmounted again: 0 then 6
  jrun imgmount -j ct1.img mnt
  [ "$rc" -eq 0 ]
  jrun imgumount -j mnt
  [ "$rc" -eq 0 ]
  jrun imgumount -j mnt
  jerr 6
  assert_nothing_left
}

@test "issue 16: in use (75) with -j names the holder; --wait waits for it" {
  N=1
  make_base_and_clones
  mkdir -p mnt/a mnt/b
  jrun imgmount -j ct1.img mnt/a
  [ "$rc" -eq 0 ]
  daemon=$(jq .pid <<<"$json")
  jrun imgmount -j ct1.img mnt/b
  jerr 75
  jis --argjson p "$daemon" '.error.holder_pid == $p'     # known: the daemon
  jrun mkimg -j -f --backing base.img ct1.img
  jerr 75 EBUSY
  # --wait: the holder goes within the wait, the mount goes ahead
  (sleep 1; "$BIN/imgumount" -q mnt/a) &
  BG_PIDS+=($!)
  jrun imgmount -j --wait=30 ct1.img mnt/b
  [ "$rc" -eq 0 ]
  jrun imgumount -j mnt/b
  [ "$rc" -eq 0 ]
  assert_nothing_left
}

@test "issue 16: usage (2), corrupt (3), no space (8)" {
  N=1
  make_base_and_clones
  jrun growimg -j ct1.img 12Q
  jerr 2
  jrun mkimg -j --no-such-option x.img 1G
  jerr 2
  jrun imgmount -j ct1.img
  jerr 2
  jrun imgcheck -j --no-such-option ct1.img
  [ "$rc" -eq 1 ]          # imgcheck: usage errors stay 1 (qemu-img's codes)
  [ ! -e x.img ]
  head -c $((1 * M)) /dev/urandom > junk.img
  jrun imginfo -j junk.img
  jerr 3
  # a host filesystem of 16 MiB: a 32 MiB image copy runs out of space
  mkdir small
  mount -t tmpfs -o size=16M tmpfs small
  head -c $((32 * M)) /dev/urandom > big.raw
  jrun imgconvert -j big.raw small/big.img
  jerr 8 ENOSPC
  [ -z "$(ls -A small)" ]
  umount small
}

@test "issue 16: a partial online grow (7) names the command that completes it; running it completes it" {
  command -v capsh >/dev/null || skip "capsh is needed to drop CAP_SYS_RESOURCE"
  N=1
  make_base_and_clones
  mkdir mnt
  jrun imgmount -j ct1.img mnt
  [ "$rc" -eq 0 ]
  # without CAP_SYS_RESOURCE the mounted ext4 cannot grow: image and loop
  # device grow, the filesystem does not
  jrun capsh --drop=cap_sys_resource -- -c "exec growimg -j ct1.img 384M"
  jerr 7
  jrun imginfo -j ct1.img
  jis --argjson s $((384 * M)) '.virtual_size == $s and .filesystem.size < $s'
  jrun imgumount -j mnt
  [ "$rc" -eq 0 ]
  jrun growimg -j ct1.img 384M
  [ "$rc" -eq 0 ]
  jrun imginfo -j ct1.img
  jis --argjson s $((384 * M)) '.virtual_size == $s and .filesystem.size == $s'
  assert_nothing_left
}
