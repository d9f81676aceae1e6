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
