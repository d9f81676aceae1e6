#!/usr/bin/env bats
# Issue 15: what the tools show and do with images and sources they cannot
# trust: a raw source that looks like an image (imgconvert's source
# format), strings read from an image printed to a terminal, and messages
# that send the user the right way.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

@test "issue 15 #15: mkimg suggests a larger cluster size only where one exists" {
  # 1 PiB at the default 1 MiB cluster: a larger cluster does it (8 MiB)
  run_split mkimg x.img 1P
  [ "$status" -eq 1 ]
  [[ $err == *"cluster size of at least 8388608"* ]]
  [ ! -e x.img ]
  # 16 PiB even at the 64 MiB maximum: no cluster size does it, so no hint
  # to use a larger one; the message says the limit instead
  run_split mkimg --cluster-size 64M x.img 16P
  [ "$status" -eq 1 ]
  [[ $err != *"larger cluster"* ]]
  [[ $err != *"at least"* ]]
  [[ $err == *"largest cluster size"* ]]
  [[ $err == *"at most 9007199254740992 bytes"* ]]
  [[ $err == *"x.img"* ]]
  [ ! -e x.img ]
  # the limit itself still works
  run_split mkimg --cluster-size 64M x.img 8P
  [ "$status" -eq 0 ]
}
