#!/usr/bin/env bats
# mkimg: creating images.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

@test "mkimg creates an empty thin image" {
  run_split mkimg disk.img 10G
  [ "$status" -eq 0 ]
  [ "$out" = "Created disk.img: virtual size 10 GiB (10737418240 bytes), cluster size 1 MiB" ]
  run_split imginfo --json disk.img
  [ "$status" -eq 0 ]
  [ "$(jget .format)" = libimg ]
  [ "$(jget .format_version)" = 1 ]
  [ "$(jget .virtual_size)" = $((10 * G)) ]
  [ "$(jget .cluster_size)" = $M ]
  [ "$(jget .allocated_clusters)" = 0 ]
  [ "$(jget .dirty)" = false ]
  # thin: the host file holds metadata only
  [ "$(jget .file_size)" -lt $((64 * M)) ]
  [ "$(jget .file_size)" = "$(file_size disk.img)" ]
  "$BIN/imgcheck" -q disk.img
}

@test "mkimg: sizes with binary suffixes and fractions" {
  for spec in "512:512" "64K:65536" "64KiB:65536" "1.5G:$((G + G / 2))" "2T:$((2 * G * 1024))" \
              "3m:$((3 * M))" "0.5K:512"; do
    rm -f s.img
    "$BIN/mkimg" -q s.img "${spec%%:*}"
    [ "$(info s.img virtual_size)" = "${spec#*:}" ] || { echo "$spec"; false; }
  done
}

@test "mkimg --cluster-size" {
  "$BIN/mkimg" -q --cluster-size 64K a.img 1G
  [ "$(info a.img cluster_size)" = 65536 ]
  "$BIN/mkimg" -q --cluster-size 64M b.img 1G
  [ "$(info b.img cluster_size)" = $((64 * M)) ]
  for bad in 32K 128M 96K 1X 0; do
    run_split mkimg --cluster-size "$bad" c.img 1G
    [ "$status" -eq 2 ]
    [[ "$err" == "mkimg: invalid cluster size '$bad'"* ]] || { echo "$err"; false; }
    [ ! -e c.img ]
  done
}

@test "mkimg --bat-reserve makes room to grow" {
  "$BIN/mkimg" -q --cluster-size 64K --bat-reserve 1T a.img 1G
  [ "$(info a.img bat_capacity)" -ge $((1024 * G)) ]
  "$BIN/mkimg" -q --cluster-size 64K b.img 1G
  [ "$(info b.img bat_capacity)" -lt $((1024 * G)) ]
}

@test "mkimg: bad sizes are refused and nothing is created" {
  for bad in 10X 1GB -1 +1G "" " 1G" 1.3K abc 0x100 99999999999999999999 16E; do
    run_split mkimg disk.img "$bad"
    [ "$status" -eq 2 ] || { echo "'$bad': $status"; false; }
    [ "$err" = "mkimg: invalid size '$bad' (expected bytes with an optional K, M, G, T, P or E suffix)" ] \
      || { echo "'$bad': $err"; false; }
  done
  for bad in 0 1000 511; do
    run_split mkimg disk.img "$bad"
    [ "$status" -eq 1 ]
    [ "$err" = "mkimg: invalid size '$bad': must be a multiple of 512 bytes, at least 512" ]
  done
  [ -z "$(ls -A)" ]
}

@test "mkimg refuses to overwrite an existing file without --force" {
  echo "precious" > disk.img
  run_split mkimg disk.img 1G
  [ "$status" -eq 1 ]
  [ "$err" = "mkimg: disk.img: already exists (use --force to overwrite)" ]
  [ "$(cat disk.img)" = precious ]
  rm disk.img
  "$BIN/mkimg" -q disk.img 2G
  run_split mkimg disk.img 4G
  [ "$status" -eq 1 ]
  [ "$(info disk.img virtual_size)" = $((2 * G)) ]
  run_split mkimg --force disk.img 4G
  [ "$status" -eq 0 ]
  [ "$(info disk.img virtual_size)" = $((4 * G)) ]
  run_split mkimg -f disk.img 8G
  [ "$status" -eq 0 ]
  [ "$(info disk.img virtual_size)" = $((8 * G)) ]
}

@test "mkimg: a failed creation leaves nothing behind" {
  # past the format's 2^57-byte limit: the library refuses it
  run_split mkimg huge.img 1E
  [ "$status" -eq 1 ]
  [[ "$err" == "mkimg: huge.img: "* ]]
  [ -z "$(ls -A)" ]
  # a failed --force keeps the old file
  "$BIN/mkimg" -q old.img 1G
  cp old.img old.copy
  run_split mkimg --force old.img 1E
  [ "$status" -eq 1 ]
  cmp old.img old.copy
  [ "$(ls -A | sort | tr '\n' ' ')" = "old.copy old.img " ]
}

@test "mkimg works with option after operands and with --" {
  "$BIN/mkimg" a.img 1G -q --cluster-size 64K
  [ "$(info a.img cluster_size)" = 65536 ]
  "$BIN/mkimg" -q -- -dash.img 1M
  [ "$("$BIN/imginfo" --json -- -dash.img | jq .virtual_size)" = $M ]
}

@test "mkimg: the image gets the mode the umask allows" {
  (umask 022; "$BIN/mkimg" -q a.img 1G)
  [ "$(stat -c %a a.img)" = 644 ]
  (umask 077; "$BIN/mkimg" -q b.img 1G)
  [ "$(stat -c %a b.img)" = 600 ]
}
