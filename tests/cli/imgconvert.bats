#!/usr/bin/env bats
# imgconvert: raw <-> libimg round trips, thinness, atomic output, errors.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

@test "raw -> libimg -> raw is identical; holes and zero runs are skipped" {
  make_raw a.raw
  run_split imgconvert a.raw a.img
  [ "$status" -eq 0 ]
  [ "$out" = "a.raw (raw) -> a.img (libimg): 16 MiB virtual, 4 MiB of data written" ]
  [ "$(info a.img virtual_size)" = $((16 * M)) ]
  # data clusters 0, 5, 9, 10; the 3000K run of zeros took no cluster
  [ "$(info a.img allocated_clusters)" = 4 ]
  "$BIN/imgcheck" -q a.img
  run_split imgconvert -O raw a.img back.raw
  [ "$status" -eq 0 ]
  cmp a.raw back.raw
  [ "$(file_size back.raw)" = $((16 * M)) ]
  # the raw output is sparse: about 1.6 MiB of data, not the zero run
  [ "$(host_usage back.raw)" -lt $((2 * M)) ]
}

@test "raw -> libimg with 64K clusters" {
  make_raw a.raw
  "$BIN/imgconvert" -q --cluster-size 64K a.raw a.img
  [ "$(info a.img cluster_size)" = 65536 ]
  [ "$(info a.img allocated_clusters)" = 27 ]
  to_raw a.img back.raw
  cmp a.raw back.raw
}

@test "libimg -> libimg copies only live data" {
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw a.img
  "$BIN/growimg" -q a.img 1T
  run_split imgconvert --cluster-size 64K a.img b.img
  [ "$status" -eq 0 ]
  [ "$out" = "a.img (libimg) -> b.img (libimg): 1 TiB virtual, 1.69 MiB of data written" ]
  [ "$(info b.img virtual_size)" = $((1024 * G)) ]
  [ "$(info b.img allocated_clusters)" = 27 ]
  "$BIN/shrinkimg" -q b.img 16M
  to_raw b.img back.raw
  cmp a.raw back.raw
  # and back to 1 MiB clusters
  "$BIN/imgconvert" -q b.img c.img
  [ "$(info c.img allocated_clusters)" = 4 ]
  to_raw c.img back2.raw
  cmp a.raw back2.raw
}

@test "raw -> raw makes a sparse copy" {
  make_raw a.raw
  "$BIN/imgconvert" -q -O raw a.raw b.raw
  cmp a.raw b.raw
  [ "$(host_usage b.raw)" -lt $((2 * M)) ]
}

@test "a raw file whose size is not a multiple of 512 is padded" {
  head -c 1000 /dev/urandom > odd.raw
  "$BIN/imgconvert" -q odd.raw odd.img
  [ "$(info odd.img virtual_size)" = 1024 ]
  to_raw odd.img back.raw
  [ "$(file_size back.raw)" = 1024 ]
  cmp -n 1000 odd.raw back.raw
  [ "$(tail -c 24 back.raw | tr -d '\0' | wc -c)" = 0 ]
  : > empty.raw
  run_split imgconvert empty.raw e.img
  [ "$status" -eq 1 ]
  [[ "$err" == "imgconvert: empty.raw: empty"* ]]
  [ ! -e e.img ]
}

@test "imgconvert refuses an existing target without --force" {
  make_raw a.raw
  echo precious > out.img
  run_split imgconvert a.raw out.img
  [ "$status" -eq 1 ]
  [ "$err" = "imgconvert: out.img: already exists (use --force to overwrite)" ]
  [ "$(cat out.img)" = precious ]
  run_split imgconvert -O raw --force a.raw out.img
  [ "$status" -eq 0 ]
  cmp a.raw out.img
  "$BIN/imgconvert" -q -f a.raw out.img
  [ "$(info out.img allocated_clusters)" = 4 ]
  # no temporary files left over
  [ "$(ls -A | sort | tr '\n' ' ')" = "a.raw out.img " ]
}

@test "imgconvert refuses to convert a file onto itself" {
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw a.img
  run_split imgconvert --force a.img a.img
  [ "$status" -eq 1 ]
  [ "$err" = "imgconvert: a.img: is the same file as the source a.img" ]
  ln a.img hard.img
  run_split imgconvert -O raw --force a.img hard.img
  [ "$status" -eq 1 ]
  "$BIN/imgcheck" -q a.img
}

@test "imgconvert -c: raw -> compressed image -> raw is identical, and smaller" {
  # compressible text, zeros, random bytes, and a tail that is not a
  # whole cluster
  { for i in $(seq 1 3000); do echo "line $i of some very compressible text"; done
    head -c 1M /dev/zero
    head -c 300K /dev/urandom
    yes libimg | head -c 700K
  } > a.raw
  truncate -s %512 a.raw
  run_split imgconvert -c --cluster-size 64K a.raw c.img
  [ "$status" -eq 0 ]
  "$BIN/imgconvert" -q --cluster-size 64K a.raw n.img
  run_split imginfo --json c.img
  [ "$(jget .compressed_clusters)" -gt 10 ]
  [ $(( $(jget .incompat_features) & 2 )) -eq 2 ]
  [ "$(file_size c.img)" -lt "$(file_size n.img)" ]
  "$BIN/imgconvert" -q -O raw c.img back.raw
  cmp a.raw back.raw
  run_tool imgcheck c.img
  [ "$status" -eq 0 ]
  run_split imgmap --json c.img
  printf '%s' "$out" | jq -e 'map(select(.compressed)) | length > 10'
  # image to image keeps the bytes; -c applies to libimg output only
  "$BIN/imgconvert" -q c.img plain.img
  "$BIN/imgconvert" -q -O raw plain.img back2.raw
  cmp a.raw back2.raw
  run_split imgconvert -c -O raw a.raw x.raw
  [ "$status" -eq 2 ]
  [ ! -e x.raw ]
}

@test "compact --compress compresses in place; writes rewrite clusters uncompressed and compact reclaims them" {
  # 64 KiB clusters of 24 KiB random bytes and 40 KiB zeros: two payloads
  # fit a host cluster
  for i in $(seq 0 63); do head -c 24K /dev/urandom; head -c 40K /dev/zero; done > a.raw
  "$BIN/imgconvert" -q --cluster-size 64K a.raw a.img
  before=$(file_size a.img)
  run_split compact --json --compress a.img
  [ "$status" -eq 0 ]
  [ "$(jget .clusters_compressed)" -eq 64 ]
  [ "$(file_size a.img)" -lt $((before * 3 / 4)) ]
  to_raw a.img b.raw
  cmp a.raw b.raw
  printf 'X%.0s' $(seq 1 100) > x
  for i in $(seq 0 40); do write_at a.img x $((i * 65536 + 7)); dd if=x of=a.raw bs=1 seek=$((i * 65536 + 7)) conv=notrunc status=none; done
  run_split imginfo --json a.img
  [ "$(jget .compressed_clusters)" -eq 23 ]
  run_split compact --json a.img
  [ "$status" -eq 0 ]
  [ "$(jget .payloads_repacked)" -gt 0 ]
  [ "$(jget .disk_usage_after)" -lt "$(jget .disk_usage_before)" ]
  to_raw a.img c.raw
  cmp a.raw c.raw
  run_tool imgcheck a.img
  [ "$status" -eq 0 ]
}

@test "imgconvert: bad options" {
  make_raw a.raw
  run_split imgconvert -O qcow2 a.raw a.img
  [ "$status" -eq 2 ]
  [[ "$err" == "imgconvert: unknown output format 'qcow2' (raw or libimg)"* ]]
  run_split imgconvert -O raw --cluster-size 64K a.raw a.img
  [ "$status" -eq 2 ]
  [[ "$err" == *"--cluster-size applies only to -O libimg"* ]]
  run_split imgconvert --cluster-size 100K a.raw a.img
  [ "$status" -eq 2 ]
  [[ "$err" == "imgconvert: invalid cluster size '100K'"* ]]
  [ "$(ls -A)" = a.raw ]
}

@test "imgconvert: a failure midway leaves no output behind" {
  make_raw a.raw
  # 1 MiB file size limit: the write of the data at 9M fails with EFBIG
  run bash -c "ulimit -f 1024; '$BIN/imgconvert' -O raw a.raw out.raw"
  [ "$status" -eq 1 ]
  [[ "$output" == *"File too large"* ]] || { echo "$output"; false; }
  # 4 MiB: the metadata (3 MiB) fits, the data clusters do not
  run bash -c "ulimit -f 4096; '$BIN/imgconvert' a.raw out.img"
  [ "$status" -eq 1 ]
  [[ "$output" == *"File too large"* ]] || { echo "$output"; false; }
  [ "$(ls -A)" = a.raw ]
  # and a failed --force keeps the old target
  echo precious > keep.img
  run bash -c "ulimit -f 1024; '$BIN/imgconvert' --force -O raw a.raw keep.img"
  [ "$status" -eq 1 ]
  [ "$(cat keep.img)" = precious ]
  [ "$(ls -A | sort | tr '\n' ' ')" = "a.raw keep.img " ]
}

@test "imgconvert: an interrupted conversion leaves no output behind" {
  yes libimg | head -c 512M > big.raw
  "$BIN/imgconvert" -O raw big.raw out.raw > /dev/null 2>&1 3>&- &
  pid=$!
  # wait until the temporary output exists, then interrupt
  for i in $(seq 200); do
    ls -A | grep -q '^\.out\.raw\.' && break
    sleep 0.01
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  # either it finished first or it cleaned up: never a partial or temp file
  [ -z "$(ls -A | grep -v -x -e big.raw -e out.raw)" ]
  if [ -e out.raw ]; then cmp big.raw out.raw; fi
}

@test "imgconvert: a corrupt libimg source is not taken for raw" {
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw a.img
  truncate -s $(( $(info a.img metadata_size) + 1000 )) a.img
  run_split imgconvert -O raw a.img out.raw
  [ "$status" -eq 3 ]
  [[ "$err" == "imgconvert: a.img: image is corrupt"* ]]
  [ ! -e out.raw ]
}

@test "imgconvert: a locked libimg source names the holder" {
  make_raw a.raw
  "$BIN/imgconvert" -q a.raw a.img
  hold_lock a.img
  run_split imgconvert -O raw a.img out.raw
  [ "$status" -eq 75 ]
  [[ "$err" == "imgconvert: a.img: image is locked by another process"*"$HOLDER_PID"* ]] || { echo "$err"; false; }
  [ ! -e out.raw ]
  "$BIN/imgconvert" -q -U -O raw a.img out.raw
  cmp a.raw out.raw
}

@test "imgconvert: missing target directory" {
  make_raw a.raw
  run_split imgconvert a.raw no/such/dir/a.img
  [ "$status" -eq 5 ]
  [[ "$err" == "imgconvert: no/such/dir/a.img: "*"No such file or directory" ]] || { echo "$err"; false; }
}

@test "imgconvert: the output gets the usual file mode" {
  make_raw a.raw
  (umask 027; "$BIN/imgconvert" -q a.raw a.img; "$BIN/imgconvert" -q -O raw a.raw b.raw)
  [ "$(stat -c %a a.img)" = 640 ]
  [ "$(stat -c %a b.raw)" = 640 ]
}

@test "imgconvert -p draws a progress bar on a terminal" {
  command -v script >/dev/null || skip "script(1) is needed for a terminal"
  make_raw a.raw
  script -qec "'$BIN/imgconvert' -p a.raw a.img" /dev/null > tty.out
  grep -q '100.0%' tty.out
  to_raw a.img back.raw
  cmp a.raw back.raw
  # elsewhere (issue 16): lines as qemu-img -p prints them
  "$BIN/imgconvert" -p -F libimg -O raw a.img c.raw > out 2> err
  [ "$(tail -n 1 err)" = "    (100.00/100%)" ]
  ! grep -q $'\r' err
  ! grep -q "100%" out
}

@test "imgconvert: a libimg source is read by img_read_bulk (direct I/O), a delta's own clusters and its backing's" {
  "$BIN/mkimg" -q a.img 8M
  truncate -s 8M want.raw
  # clusters written last to first: on the host they lie in reverse order
  for i in 7 6 5 4 3 2 1 0; do
    head -c $((M - 4096)) /dev/urandom > d$i
    write_at a.img d$i $((i * M + 4096))
    dd if=d$i of=want.raw bs=4096 seek=$((i * 256 + 1)) conv=notrunc status=none
  done
  run_split imgconvert -v -O raw a.img back.raw
  [ "$status" -eq 0 ]
  [[ "$err" == *"data clusters (of the image and its backing images) read with"*"direct I/O"* ]]
  cmp want.raw back.raw
  "$BIN/imgconvert" -q a.img b.img
  to_raw b.img back2.raw
  cmp want.raw back2.raw
  # a delta: its own clusters from its file, the rest from the backing image
  "$BIN/mkimg" -q --backing a.img top.img
  head -c $((2 * M)) /dev/urandom > own
  write_at top.img own $((3 * M))
  dd if=own of=want.raw bs=1M seek=3 conv=notrunc status=none
  "$BIN/imgconvert" -q -F libimg -O raw top.img back3.raw
  cmp want.raw back3.raw
}

@test "issue 17: imgconvert reads a chain with compressed, out-of-order and sparse clusters as the disk reads (img_next_run, img_read_bulk), on both engines" {
  # base: 12 MiB, 64K clusters: compressible text, random data, zero runs, holes
  truncate -s $((12 * M)) base.raw
  yes "libimg base line" | head -c $((3 * M)) | dd of=base.raw bs=64K seek=2 conv=notrunc status=none
  head -c $((2 * M + 3000)) /dev/urandom | dd of=base.raw bs=4096 seek=1500 conv=notrunc status=none
  dd if=/dev/zero of=base.raw bs=64K seek=80 count=8 conv=notrunc status=none
  head -c 5000 /dev/urandom | dd of=base.raw bs=1 seek=$((12 * M - 5000)) conv=notrunc status=none
  "$BIN/imgconvert" -q -c --cluster-size 64K -F raw base.raw base.img
  [ "$(info base.img compressed_clusters)" -gt 0 ]
  # the delta: 16 MiB, its own clusters written last to first (host order
  # reversed), over base data, over holes, across and past base's end
  "$BIN/mkimg" -q --backing base.img top.img
  "$BIN/growimg" -q top.img 16M
  cp base.raw want.raw
  truncate -s $((16 * M)) want.raw
  for i in 7 5 3 1; do
    head -c $((M - 1536)) /dev/urandom > own$i
    write_at top.img own$i $((i * 2 * M + 1024))
    dd if=own$i of=want.raw bs=512 seek=$(((i * 2 * M + 1024) / 512)) conv=notrunc status=none
  done
  for e in uring posix; do
    LIBIMG_IO=$e "$BIN/imgconvert" -q -F libimg -O raw top.img out-$e.raw
    cmp want.raw out-$e.raw
    LIBIMG_IO=$e "$BIN/imgconvert" -q -F libimg top.img out-$e.img
    to_raw out-$e.img back-$e.raw
    cmp want.raw back-$e.raw
  done
  "$BIN/imgconvert" -q -c -F libimg top.img outc.img
  to_raw outc.img backc.raw
  cmp want.raw backc.raw
  # only data is read and written: 5 MiB of base's data and 4 of the delta's
  # (in whole clusters), not the zero runs and holes
  run_split imgconvert -j -F libimg top.img j.img
  [ "$status" -eq 0 ]
  [ "$(jget .copied_bytes)" -le $((10 * M)) ]
  "$BIN/imgcheck" -q out-uring.img
}
