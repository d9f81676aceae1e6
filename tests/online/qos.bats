#!/usr/bin/env bats
# Issue 18, QoS per export: a bandwidth limit set at start (imgattach
# --bps-write, passed on to imgserve) holds a direct write back, a change
# through the control socket (imgctl qos) takes effect at once, and the
# limits are in the status.  The measured accuracy is bench/qos-online.sh's.

load helpers

setup() { online_setup; }
teardown() { online_teardown; }

# ms DEV MIB: milliseconds a direct write of MIB MiB to DEV takes.
write_ms() {
  local t0 t1
  t0=$(date +%s%N)
  dd if=/dev/zero of="$1" bs=1M count="$2" oflag=direct status=none
  t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000000 ))
}

@test "issue 18 QoS: a 2 MiB/s write limit set at attach holds an 8 MiB direct write to >= 3 s; imgctl qos lifts it at once" {
  mkimg -q a.img 64M
  dev=$(imgattach --bps-write=2M --burst=0 a.img)
  run imgctl -j status a.img
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | python3 -c 'import json,sys; s=json.load(sys.stdin)["status"]; print(s["qos_bps_write"], s["qos_bps_read"], s["qos_burst_ms"])')" = "2097152 0 0" ]
  ms=$(write_ms "$dev" 8)
  echo "limited: $ms ms"
  [ "$ms" -ge 3000 ]
  [ "$ms" -le 6000 ]
  # reads are not limited
  t0=$(date +%s%N)
  dd if="$dev" of=/dev/null bs=1M count=8 iflag=direct status=none
  [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 2000 ]
  # the limit goes at runtime
  run imgctl qos a.img --bps-write=0
  [ "$status" -eq 0 ]
  [[ "$output" == *"qos_bps_write:        0"* ]]
  ms=$(write_ms "$dev" 8)
  echo "unlimited: $ms ms"
  [ "$ms" -lt 1500 ]
  imgdetach -q a.img
  assert_nothing_left
}

@test "issue 18 QoS: imgctl qos sets a limit at runtime (status shows it, the write slows), the word form and bad settings" {
  mkimg -q a.img 64M
  dev=$(imgattach a.img)
  ms=$(write_ms "$dev" 8)
  echo "unlimited: $ms ms"
  [ "$ms" -lt 1500 ]
  run imgctl -j qos a.img --bps-write=4M --burst=0
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | python3 -c 'import json,sys; print(json.load(sys.stdin)["reply"]["qos_bps_write"])')" = 4194304 ]
  ms=$(write_ms "$dev" 8)
  echo "4 MiB/s: $ms ms"
  [ "$ms" -ge 1500 ]
  [ "$ms" -le 4000 ]
  run imgctl status a.img
  [[ "$output" == *"qos_bps_write:        4194304"* ]]
  [[ "$output" =~ qos_waited:\ +[1-9] ]]
  # one KEY=VALUE,... word; keys not named keep their value
  run imgctl qos a.img iops-read=500,bps=64M
  [ "$status" -eq 0 ]
  [[ "$output" == *"qos_iops_read:        500"* ]]
  [[ "$output" == *"qos_bps_write:        4194304"* ]]
  # refused, nothing changed
  run imgctl qos a.img speed=1
  [ "$status" -eq 1 ]
  [[ "$output" == *"invalid QoS setting 'speed=1'"* ]]
  run imgctl qos a.img --bps-write=lots
  [ "$status" -eq 2 ]
  run imgctl grow a.img 128M --bps-write=1M
  [ "$status" -eq 2 ]
  run imgctl -j status a.img
  [ "$(echo "$output" | python3 -c 'import json,sys; s=json.load(sys.stdin)["status"]; print(s["qos_bps_write"], s["qos_iops_read"], s["qos_bps"])')" = "4194304 500 67108864" ]
  imgdetach -q a.img
  assert_nothing_left
}

@test "issue 18 QoS: imgserve and imgmount refuse a bad limit before serving anything" {
  mkimg -q a.img 64M
  : > exp
  run imgserve --iops-write=many a.img exp
  [ "$status" -eq 2 ]
  [[ "$output" == *"invalid iops-write 'many'"* ]]
  mkdir mnt
  run imgmount --burst=-1 a.img mnt
  [ "$status" -eq 2 ]
  assert_nothing_left
}

@test "issue 18 QoS: reads go on while more writes than imgserve has workers wait for a write limit" {
  mkimg -q a.img 64M
  dev=$(imgattach --iops-write=20 --burst=0 a.img)
  dd if=/dev/zero of="$dev" bs=1M count=2 oflag=direct status=none
  # 32 writers, each with one direct 4 KiB write after another: 32 requests
  # waiting at once (imgserve runs 16 workers)
  for i in $(seq 32); do
    dd if=/dev/zero of="$dev" bs=4k count=50 seek=$((1024 + i * 64)) oflag=direct \
       status=none 2>/dev/null &
    BG_PIDS+=($!)
  done
  sleep 2
  run imgctl -j status a.img
  [ "$(echo "$output" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["qos_waited"] > 0)')" = True ]
  t0=$(date +%s%N)
  dd if="$dev" of=/dev/null bs=64k count=32 iflag=direct status=none
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  echo "2 MiB read in $ms ms"
  [ "$ms" -lt 1500 ]
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  imgctl -q qos a.img --iops-write=0
  wait
  imgdetach -q a.img
  assert_nothing_left
}
