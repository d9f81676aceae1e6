#!/usr/bin/env bats
# Online snapshots and merges (imgsnap through imgserve's control socket):
# taken while a filesystem is mounted and fio verifies its writes.

load helpers

setup() { online_setup; }
teardown() { online_teardown; }

@test "imgsnap create and merge while mounted with fio --verify running: no error, the chain shows, imgcheck clean" {
  command -v fio >/dev/null || skip "fio is not installed"
  mkimg --fs ext4 a.img 256M >/dev/null
  mkdir mnt
  imgmount -q a.img mnt
  head -c $((8 * M)) /dev/urandom > mnt/keep
  (cd mnt && sha256sum keep) > sums
  fio --name=verify --filename=mnt/fio.dat --size=24M --rw=randwrite --bs=4k \
      --ioengine=libaio --iodepth=8 --direct=1 --verify=crc32c --verify_fatal=1 \
      --do_verify=1 --output=fio.out >/dev/null 2>&1 &
  fio_pid=$!
  BG_PIDS+=("$fio_pid")
  sleep 0.5
  run_split imgsnap create a.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [[ $out == *"snapshot a.img.snap1 taken online"* ]]
  kill -0 "$fio_pid"    # the snapshot came while fio was running
  run_split imgsnap list --json a.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ "$(jq length <<<"$out")" -eq 2 ]
  [ "$(jq -r '.[0].backing' <<<"$out")" = a.img.snap1 ]
  [ "$(jq -r '.[1].backing' <<<"$out")" = null ]
  run_split imgsnap merge a.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [[ $out == *"merged into a.img.snap1 online"* ]]
  wait "$fio_pid"
  grep -q "err= 0" fio.out
  ! grep -qi "verify.*bad\|crc32c.*mismatch" fio.out
  [ ! -e a.img.snap1 ]
  run_split imgsnap list --json a.img
  [ "$(jq length <<<"$out")" -eq 1 ]
  (cd mnt && sha256sum -c --quiet ../sums)
  imgumount -q mnt
  "$BIN/imgcheck" a.img
  imgmount -q a.img mnt
  (cd mnt && sha256sum -c --quiet ../sums)
  imgumount -q mnt
  assert_nothing_left
}

@test "imgsnap create online: a taken name is refused and the filesystem is thawed again" {
  mkimg --fs ext4 a.img 64M >/dev/null
  mkdir mnt
  imgmount -q a.img mnt
  echo data > mnt/f
  : > taken.img
  run_split imgsnap create --name taken.img a.img
  [ "$status" -eq 1 ]
  [[ $err == *"taken.img"*"File exists"* ]] || { echo "$err"; false; }
  timeout 10 sh -c 'echo more >> mnt/f && sync mnt/f'
  run_split imgsnap list --json a.img
  [ "$(jq length <<<"$out")" -eq 1 ]
  # a named one works, and its name shows in the chain
  run_split imgsnap create --json --name base.img a.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ "$(jq -r .snapshot <<<"$out")" = base.img ]
  [ "$(jq -r .online <<<"$out")" = true ]
  timeout 10 sh -c 'echo again >> mnt/f && sync mnt/f'
  [ "$(cat mnt/f)" = "$(printf 'data\nmore\nagain')" ]
  imgumount -q mnt
  "$BIN/imgcheck" a.img
  "$BIN/imgcheck" base.img
  assert_nothing_left
}

@test "imgsnap online: merge without a backing image and rebase are refused, the export keeps working" {
  mkimg a.img 16M >/dev/null
  imgattach -q a.img
  run_split imgsnap merge a.img
  [ "$status" -eq 1 ]
  [[ $err == *"no backing image"* ]] || { echo "$err"; false; }
  run_split imgsnap rebase a.img ""
  [ "$status" -eq 75 ]
  [[ $err == *"in use by imgserve"* ]] || { echo "$err"; false; }
  for c in "flatten" "template"; do
    run_split imgsnap $c a.img
    [ "$status" -eq 75 ] || { echo "$c: $status $err"; false; }
  done
  dev=$(cat "$(rundir)/loop")
  head -c $((1 * M)) /dev/urandom > blob
  dd if=blob of="$dev" bs=1M oflag=direct status=none
  run_split imgsnap create a.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  cmp -n $((1 * M)) blob "$dev"
  imgdetach -q a.img
  "$BIN/imgconvert" -q -F libimg -O raw a.img flat.raw
  cmp -n $((1 * M)) blob flat.raw
  "$BIN/imgcheck" a.img
  [ "$("$BIN/imgsnap" list --json a.img | jq -r '.[0].backing')" = a.img.snap1 ]
  assert_nothing_left
}

# A mounted clone of base.img with a file of its own; base.img then moved
# out of the directory (as deleted: the chain no longer opens by path).
mounted_clone_without_base() {
  mkimg --fs ext4 base.img 64M >/dev/null
  mkimg -q --backing base.img ct.img
  mkdir mnt away
  imgmount -q ct.img mnt
  echo data > mnt/f
  sync mnt/f
  mv base.img away/
  ls -a > ../before
}

# The container still reads and writes, the daemon still has its image
# open, and nothing new appeared in the directory.
container_untouched() {
  { cat mnt/f; echo more; } > ../f.expect
  timeout 10 sh -c 'echo more >> mnt/f && sync mnt/f'
  cmp mnt/f ../f.expect
  timeout 10 sh -c 'head -c 1M /dev/urandom > mnt/g && sync mnt/g && cmp mnt/g mnt/g'
  [[ "$(ctl status)" == *'"open": true'* ]]
  ls -a > ../after
  diff ../before ../after
}

@test "issue 14 #4: online snapshot of a clone whose base is gone is refused before the freeze; the container keeps working" {
  mounted_clone_without_base
  run_split imgsnap create ct.img
  [ "$status" -ne 0 ]
  container_untouched
  [[ $err == *"ct.img"*"base.img"*"refused before changing anything"* ]] || { echo "$err"; false; }
  # with the base back, the snapshot works and the chain reopens
  mv away/base.img .
  run_split imgsnap create ct.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  timeout 10 sh -c 'echo again >> mnt/f && sync mnt/f'
  [ "$(cat mnt/f)" = "$(printf 'data\nmore\nagain')" ]
  imgumount -q mnt
  "$BIN/imgcheck" ct.img
  assert_nothing_left
}

@test "issue 14 #4: online merge into a snapshot whose own base is gone is refused; the container keeps working" {
  mkimg --fs ext4 base.img 64M >/dev/null
  mkimg -q --backing base.img ct.img
  mkdir mnt away
  imgmount -q ct.img mnt
  echo data > mnt/f
  sync mnt/f
  run_split imgsnap create ct.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  mv base.img away/
  ls -a > ../before
  s0=$(sha256sum ct.img.snap1 | cut -d' ' -f1)
  run_split imgsnap merge ct.img
  [ "$status" -ne 0 ]
  [[ $err == *"base.img"* ]] || { echo "$err"; false; }
  [ "$(stat -c %a ct.img.snap1)" = 444 ]
  [ "$(sha256sum ct.img.snap1 | cut -d' ' -f1)" = "$s0" ]
  container_untouched
  # a clone's base is not merged into online either, unless named
  mv away/base.img .
  ls -a > ../before
  run_split imgsnap merge ct.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  ls -a > ../before
  b0=$(sha256sum base.img | cut -d' ' -f1)
  run_split imgsnap merge ct.img
  [ "$status" -ne 0 ]
  [[ $err == *"not its own snapshot"* ]] || { echo "$err"; false; }
  [ "$(sha256sum base.img | cut -d' ' -f1)" = "$b0" ]
  container_untouched
  # named, it is (the daemon gets the full path)
  run_split imgsnap merge --into base.img ct.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ ! -e base.img ]
  [ "$(imgsnap list --json ct.img | jq length)" -eq 1 ]
  ls -a > ../before
  container_untouched
  imgumount -q mnt
  "$BIN/imgcheck" ct.img
  assert_nothing_left
}

@test "issue 15 #4: the daemon's error messages are printed escaped" {
  mkimg --fs ext4 a.img 64M >/dev/null
  mkdir mnt
  imgmount -q a.img mnt
  # a name with an escape sequence comes back in the daemon's refusal
  : > $'t\e[31m.img'
  run_split imgsnap create --name $'t\e[31m.img' a.img
  [ "$status" -eq 1 ]
  [[ $err == *'t\x1b[31m.img'*"File exists"* ]] || { echo "$err"; false; }
  ! printf '%s' "$err" | grep -q $'\e' || { echo "raw ESC: $err"; false; }
  imgumount -q mnt
  assert_nothing_left
}

@test "issue 14 #3c: online merges leave the merged image without an owner field; create, create, merge, merge and create, merge, create, merge work" {
  mkimg a.img 16M >/dev/null
  imgattach -q a.img
  dev=$(cat "$(rundir)/loop")
  head -c $((1 * M)) /dev/urandom > blob
  dd if=blob of="$dev" bs=1M oflag=direct status=none
  for step in create create merge merge create merge create merge; do
    run_split imgsnap $step a.img
    [ "$status" -eq 0 ] || { echo "$step: $err"; false; }
  done
  cmp -n $((1 * M)) blob "$dev"
  [ ! -e a.img.snap1 ] && [ ! -e a.img.snap2 ]
  # the served image's header, read-only while the daemon has it
  [ "$("$BIN/imginfo" --json a.img | jq -r .incompat_features)" = 0 ]
  run_split imgsnap create a.img
  run_split imgsnap create a.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  run_split imgsnap merge a.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  [ "$("$BIN/imginfo" --json a.img | jq -r .incompat_features)" = 1 ]
  run_split imgsnap merge a.img
  [ "$status" -eq 0 ] || { echo "$err"; false; }
  cmp -n $((1 * M)) blob "$dev"
  imgdetach -q a.img
  [ "$("$BIN/imginfo" --json a.img | jq -r .incompat_features)" = 0 ]
  "$BIN/imgconvert" -q -F libimg -O raw a.img flat.raw
  cmp -n $((1 * M)) blob flat.raw
  "$BIN/imgcheck" a.img
  assert_nothing_left
}
