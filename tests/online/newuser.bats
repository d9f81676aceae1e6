#!/usr/bin/env bats
# Issue 16, as a new user's provisioning script meets the online tools:
# decisions taken on exit statuses and JSON only (libimg(7)).

load helpers

setup() { online_setup; }
teardown() { online_teardown; }

# jrun CMD...: stdout in $json, exit status in $rc, stderr in $BATS_TEST_TMPDIR/stderr
jrun() {
  rc=0
  json=$("$@" 2>"$BATS_TEST_TMPDIR/stderr") || rc=$?
  return 0
}

@test "issue 16 newuser: a partial online grow (7) names the image and the cause in the JSON error object" {
  command -v capsh >/dev/null || skip "capsh is needed to drop CAP_SYS_RESOURCE"
  mkimg -q --fs ext4 ct.img 256M
  mkdir mnt
  imgmount -q ct.img mnt
  jrun capsh --drop=cap_sys_resource -- -c "exec growimg -j ct.img 384M"
  [ "$rc" -eq 7 ] || { cat "$BATS_TEST_TMPDIR/stderr"; false; }
  [ "$(jq -r .error.status <<<"$json")" = 7 ]
  [ "$(jq -r .error.file <<<"$json")" = ct.img ]
  [ "$(jq -r .error.errno_name <<<"$json")" = EPERM ]
  imgumount -q mnt
  assert_nothing_left
}

@test "issue 16 newuser: imgmount of an image already mounted on that mount point is 75 (in use), and --wait waits" {
  mkimg -q --fs ext4 ct.img 64M
  mkdir mnt
  imgmount -q ct.img mnt
  pid=$(cat "$LIBIMG_RUNDIR"/*/pid)
  # a rerun of the same imgmount: the image is served, not a usage error
  jrun imgmount -j ct.img mnt
  [ "$rc" -eq 75 ] || { echo "exit $rc: $json"; false; }
  [ "$(jq -r .error.errno_name <<<"$json")" = EBUSY ]
  [ "$(jq -r .error.holder_pid <<<"$json")" = "$pid" ]
  jrun imgmount -j --wait=0.3 ct.img mnt
  [ "$rc" -eq 75 ]
  # --wait waits for the holder to go, then mounts
  ( sleep 1; imgumount -q mnt ) &
  BG_PIDS+=($!)
  jrun imgmount -j --wait=20 ct.img mnt
  [ "$rc" -eq 0 ] || { cat "$BATS_TEST_TMPDIR/stderr"; false; }
  [ "$(jq -r .pid <<<"$json")" != "$pid" ]
  # another image on that mount point stays a refusal naming the mount point
  mkimg -q --fs ext4 other.img 64M
  jrun imgmount -j other.img mnt
  [ "$rc" -eq 1 ]
  [ "$(jq -r .error.file <<<"$json")" = mnt ]
  imgumount -q mnt
  assert_nothing_left
}

@test "issue 16 newuser: growimg online to the size the image and its ext4 already have is 0 (a rerun), also without CAP_SYS_RESOURCE" {
  command -v capsh >/dev/null || skip "capsh is needed to drop CAP_SYS_RESOURCE"
  mkimg -q --fs ext4 ct.img 256M
  mkdir mnt
  imgmount -q ct.img mnt
  jrun capsh --drop=cap_sys_resource -- -c "exec growimg -j ct.img 256M"
  [ "$rc" -eq 0 ] || { cat "$BATS_TEST_TMPDIR/stderr"; false; }
  [ "$(jq -r .filesystem_grown <<<"$json")" = false ]
  [ "$(jq -r .new_size <<<"$json")" = $((256 * M)) ]
  # a real grow still needs the capability: partial (7)
  jrun capsh --drop=cap_sys_resource -- -c "exec growimg -j ct.img 320M"
  [ "$rc" -eq 7 ]
  imgumount -q mnt
  assert_nothing_left
}

@test "issue 16 newuser: imgmount of a clone whose base is gone (4) gives the daemon's reason in the JSON error, no made-up errno" {
  mkimg -q --fs ext4 base.img 64M
  mkimg -q --backing base.img ct.img
  rm base.img
  mkdir mnt
  jrun imgmount -j ct.img mnt
  [ "$rc" -eq 4 ] || { cat "$BATS_TEST_TMPDIR/stderr"; false; }
  msg=$(jq -r .error.message <<<"$json")
  [[ "$msg" == *"backing chain cannot be opened"*"base.img"* ]] || { echo "message: $msg"; false; }
  [ "$(jq -r .error.errno <<<"$json")" = null ]
  # the daemon's message still reaches stderr
  grep -q "^imgserve: .*base.img" "$BATS_TEST_TMPDIR/stderr"
  jrun imgattach -j ct.img
  [ "$rc" -eq 4 ]
  [[ "$(jq -r .error.message <<<"$json")" == *"base.img"* ]]
  assert_nothing_left
}

@test "issue 16 newuser: imgmount --wait racing an imgumount that is still cleaning up waits for it, then mounts" {
  mkimg -q --fs ext4 ct.img 64M
  mkdir mnt
  imgmount -q ct.img mnt
  # the daemon gone, its state still recorded: what imgmount --wait sees
  # between an imgumount stopping the daemon and removing its run directory
  kill -9 "$(cat "$LIBIMG_RUNDIR"/*/pid)"
  ( sleep 0.7; imgumount -q ct.img ) &
  BG_PIDS+=($!)
  jrun imgmount -j --wait=20 ct.img mnt
  [ "$rc" -eq 0 ] || { cat "$BATS_TEST_TMPDIR/stderr"; false; }
  imgumount -q mnt
  # without --wait a state left behind is refused at once
  imgmount -q ct.img mnt
  kill -9 "$(cat "$LIBIMG_RUNDIR"/*/pid)"
  jrun imgmount -j ct.img mnt
  [ "$rc" -eq 1 ]
  imgumount -q ct.img
  assert_nothing_left
}
