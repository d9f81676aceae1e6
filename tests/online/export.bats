#!/usr/bin/env bats
# imgserve's export and imgattach/imgdetach: the file the kernel sees, the
# control socket, discard through the loop device.

load helpers

setup() { online_setup; }
teardown() { online_teardown; }

@test "imgserve: the export is a regular file of the virtual size; read, write, punch, zero range" {
  mkimg a.img 64M >/dev/null
  touch exp
  imgserve --daemon -q a.img exp
  [ "$(stat -c %F exp)" = "regular file" ]
  [ "$(file_size exp)" -eq $((64 * M)) ]
  grep -q "^libimg:$T/a.img $T/exp fuse.libimg " /proc/mounts
  # a written cluster, then a 4 KiB punch and a 4 KiB zero range inside it
  head -c $((2 * M)) /dev/urandom > data
  dd if=data of=exp bs=1M seek=3 conv=notrunc,fsync status=none
  cmp <(dd if=exp bs=1M skip=3 count=2 status=none) data
  fallocate -p -o $((3 * M + 8192)) -l 4096 exp
  fallocate -z -o $((4 * M + 65536)) -l 4096 exp
  dd if=exp of=back bs=1M skip=3 count=2 status=none
  cmp -n 8192 back data
  [ -z "$(dd if=back bs=4096 skip=2 count=1 status=none | tr -d '\0' | head -c1)" ]
  cmp -i 12288 -n $((M - 12288)) back data
  [ -z "$(dd if=back bs=4096 skip=$(( (M + 65536) / 4096 )) count=1 status=none | tr -d '\0' | head -c1)" ]
  # the statfs block size the loop driver takes for discard granularity
  [ "$(stat -f -c %S exp)" -eq 4096 ]
  # status, a bad command, then stop
  ctl status | grep -q '^ok {.*"virtual_size": *67108864'
  ctl bogus | grep -q "^error 22 unknown command"
  ctl "grow 12x" | grep -q "^error 22"
  # the kernel keeps the attributes for long (ATTR_TIMEOUT): a resize
  # through the daemon must still show at once
  [ "$(file_size exp)" -eq $((64 * M)) ]
  ctl "grow $((96 * M))" | grep -q '^ok'
  [ "$(file_size exp)" -eq $((96 * M)) ]
  ctl "shrink $((64 * M))" | grep -q '^ok'
  [ "$(file_size exp)" -eq $((64 * M)) ]
  pid=$(daemon_pid)
  ctl stop | grep -q '^ok'
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$pid" 2>/dev/null
  ! grep -q " $T/exp " /proc/mounts
  run "$BIN/imgcheck" a.img
  [ "$status" -eq 0 ]
  [ "$("$BIN/imginfo" --json a.img | jq -r .dirty)" = false ]
  assert_nothing_left
}

@test "imgserve: SIGTERM flushes, unmounts and leaves the image clean; the lock names the daemon" {
  mkimg a.img 16M >/dev/null
  touch exp exp2
  imgserve --daemon -q a.img exp
  pid=$(daemon_pid)
  printf 'hello' | dd of=exp bs=1 seek=1000 conv=notrunc status=none
  run_split imgserve a.img exp2
  [ "$status" -eq 75 ]
  [[ "$err" == *"a.img"*"locked"*"$pid"* ]]
  kill -TERM "$pid"
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  ! kill -0 "$pid" 2>/dev/null
  ! grep -q " $T/exp " /proc/mounts
  [ "$("$BIN/imginfo" --json a.img | jq -r .dirty)" = false ]
  "$BIN/imgcheck" a.img
  touch exp
  imgserve --daemon -q a.img exp
  [ "$(dd if=exp bs=1 skip=1000 count=5 status=none)" = hello ]
  kill -TERM "$(daemon_pid)"
  for i in $(seq 100); do grep -q " $T/exp " /proc/mounts || break; sleep 0.1; done
  assert_nothing_left
}

@test "imgserve: the host page cache of the image stays within --cache-size" {
  command -v fincore >/dev/null || skip "needs fincore (util-linux)"
  mkimg a.img 256M >/dev/null
  touch exp
  imgserve --daemon -q --cache-size 16M a.img exp
  ctl status | grep -q '"cache_limit": *16777216'
  head -c $((128 * M)) /dev/urandom > data
  # written and flushed through the export, then read back: 128 MiB went
  # through, the image file keeps 16 MiB of it (and its metadata)
  dd if=data of=exp bs=1M oflag=direct conv=notrunc,fsync status=none
  cmp <(dd if=exp bs=1M count=128 iflag=direct status=none) data
  used=$(ctl status | sed 's/.*"cache_bytes": *\([0-9]*\).*/\1/')
  [ "$used" -le $((16 * M)) ]
  cached=$(fincore -b -n -o RES a.img)
  echo "image file cached: $cached bytes"
  [ "$cached" -le $((20 * M)) ]
  # without a limit, the same reads leave it all cached (the check above
  # could fail)
  # (the daemon unmounts the export, then closes the image: wait for
  # the process, whose lock the next daemon needs)
  pid=$(daemon_pid)
  kill -TERM "$pid"
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  imgserve --daemon -q --host-cache a.img exp
  cmp <(dd if=exp bs=1M count=128 iflag=direct status=none) data
  [ "$(fincore -b -n -o RES a.img)" -ge $((100 * M)) ]
  ! ctl status | grep -q cache_limit
  kill -TERM "$(daemon_pid)"
  for i in $(seq 100); do grep -q " $T/exp " /proc/mounts || break; sleep 0.1; done
  run_split imgserve --cache-size 12x a.img exp
  [ "$status" -eq 2 ]
  [[ "$err" == *"invalid cache size '12x'"* ]]
  assert_nothing_left
}

@test "imgserve: bad input" {
  mkimg a.img 16M >/dev/null
  head -c 1M /dev/urandom > notimg
  touch exp; echo x > full; mkdir dir
  run_split imgserve notimg exp
  [ "$status" -eq 3 ]; [[ "$err" == *"notimg: not a libimg image"* ]]
  run_split imgserve a.img full
  [ "$status" -eq 1 ]; [[ "$err" == *"full: the export must be an empty regular file"* ]]
  run_split imgserve a.img dir
  [ "$status" -eq 1 ]; [[ "$err" == *"dir: the export must be an empty regular file"* ]]
  run_split imgserve a.img missing
  [ "$status" -eq 5 ]; [[ "$err" == *"missing: No such file or directory"* ]]
  run_split imgserve a.img
  [ "$status" -eq 2 ]
  assert_nothing_left
}

@test "imgattach: loop device with discard (4 KiB granularity) that reaches the image; imgdetach by device" {
  mkimg a.img 256M >/dev/null
  run_split imgattach a.img
  [ "$status" -eq 0 ]
  dev=$out
  [[ "$dev" == /dev/loop* ]]
  [ "$(blockdev --getsize64 "$dev")" -eq $((256 * M)) ]
  n=${dev#/dev/}
  [ "$(cat /sys/block/$n/queue/discard_granularity)" -eq 4096 ]
  [ "$(cat /sys/block/$n/queue/discard_max_bytes)" -gt 0 ]
  dd if=/dev/urandom of="$dev" bs=1M count=40 oflag=direct status=none
  sync
  before=$(host_usage a.img)
  [ "$before" -ge $((40 * M)) ]
  blkdiscard -o 0 -l $((32 * M)) "$dev"
  after=$(host_usage a.img)
  [ $((before - after)) -ge $((31 * M)) ]   # less what the metadata grew
  # a discard of 4 KiB inside a written cluster reads back as zeros
  blkdiscard -o $((36 * M + 4096)) -l 4096 "$dev"
  [ -z "$(dd if="$dev" bs=4096 skip=$(( (36 * M + 4096) / 4096 )) count=1 iflag=direct status=none | tr -d '\0' | head -c1)" ]
  [ -n "$(dd if="$dev" bs=4096 skip=$(( 36 * M / 4096 )) count=1 iflag=direct status=none | tr -d '\0' | head -c1)" ]
  # imginfo tells who holds it
  run_split imginfo --json a.img
  [ "$status" -eq 0 ]
  [ "$(jq -r .in_use.loop_device <<<"$out")" = "$dev" ]
  [ "$(jq -r .in_use.pid <<<"$out")" = "$(daemon_pid)" ]
  run_split imginfo a.img
  [[ "$out" == *"in use: by imgserve (pid $(daemon_pid))"* ]]
  [[ "$out" == *"loop device: $dev"* ]]
  # a second attach is refused, naming the holder
  run_split imgattach a.img
  [ "$status" -eq 75 ]
  [[ "$err" == *"a.img: in use by imgserve (pid $(daemon_pid)), loop device $dev"* ]]
  run_split imgdetach "$dev"
  [ "$status" -eq 0 ]
  assert_nothing_left
  "$BIN/imgcheck" a.img
  [ "$("$BIN/imginfo" --json a.img | jq -r .dirty)" = false ]
  [ "$("$BIN/imginfo" --json a.img | jq -r .in_use)" = null ]
}
