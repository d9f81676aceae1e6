#!/usr/bin/env bats
# The backing-path policy online (issue 14 #6): a clone in a containers
# directory over a template in another directory, mounted through the
# daemon, which takes the allowed directories from the same environment
# (LIBIMG_BACKING_DIRS) and --allow-backing-path from imgmount/imgattach.
# The offline steps are in tests/cli/policy.bats.

load helpers

setup() {
  online_setup
  unset LIBIMG_BACKING_DIRS
  export LIBIMG_BACKING_DIRS_FILE=$T/no-such-backing-dirs
  mkdir templates containers mnt
  mkimg -q --fs ext4 templates/base.img 256M
  imgmount -q templates/base.img mnt
  echo template > mnt/from-template
  imgumount -q mnt
  chmod 0444 templates/base.img
  tsum=$(sha256sum < templates/base.img)
}
teardown() { online_teardown; }

@test "issue 14 #6: the template layout end to end: create, mount, write, compact, grow, check, convert (LIBIMG_BACKING_DIRS)" {
  export LIBIMG_BACKING_DIRS=$T/templates
  mkimg -q --backing "$T/templates/base.img" containers/ct1.img
  mkimg -q --backing ../templates/base.img containers/ct2.img
  for c in ct1 ct2; do
    run_split imgmount "containers/$c.img" mnt
    [ "$status" -eq 0 ]
    [ "$(cat mnt/from-template)" = template ]
    head -c $((8 * M)) /dev/urandom > mnt/data
    sha256sum < mnt/data > "$c.sum"
    imgumount -q mnt
    assert_nothing_left
    compact -q "containers/$c.img"
    growimg -q "containers/$c.img" +64M
    imgcheck -q "containers/$c.img"
    imgconvert -q -F libimg "containers/$c.img" "$c-flat.img"
    [ "$(imginfo --json "$c-flat.img" | jq -r '.backing // empty')" = "" ]
    imgmount -q "$c-flat.img" mnt
    [ "$(cat mnt/from-template)" = template ]
    [ "$(sha256sum < mnt/data)" = "$(cat "$c.sum")" ]
    imgumount -q mnt
    assert_nothing_left
  done
  [ "$(sha256sum < templates/base.img)" = "$tsum" ]
  # the daemon refuses the clone without the allow-list, and says why
  unset LIBIMG_BACKING_DIRS
  run_split imgmount containers/ct1.img mnt
  [ "$status" -ne 0 ]
  [[ "$err" == *"absolute"*"LIBIMG_BACKING_DIRS"* ]]
  assert_nothing_left
}

@test "issue 14 #6: imgmount and imgattach pass --allow-backing-path to the daemon" {
  mkimg -q --allow-backing-path --backing "$T/templates/base.img" containers/ct1.img
  run_split imgattach containers/ct1.img
  [ "$status" -ne 0 ]
  assert_nothing_left
  run_split imgattach --allow-backing-path containers/ct1.img
  [ "$status" -eq 0 ]
  imgdetach -q containers/ct1.img
  imgmount -q --allow-backing-path containers/ct1.img mnt
  [ "$(cat mnt/from-template)" = template ]
  echo mine > mnt/own
  imgumount -q mnt
  assert_nothing_left
  imgcheck -q --allow-backing-path containers/ct1.img
  [ "$(sha256sum < templates/base.img)" = "$tsum" ]
}
