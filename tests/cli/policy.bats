#!/usr/bin/env bats
# What the tools may open: the backing-path policy (--allow-backing-path on
# every tool, LIBIMG_BACKING_DIRS, the backing-dirs file), backing names
# that are symbolic links, FIFOs and block devices (issue 14 #6, issue 15
# #1, #7, #12).  The template layout's mount step is in
# tests/online/policy.bats.

load helpers

setup() {
  common_setup
  unset LIBIMG_BACKING_DIRS
  # never the machine's /etc/libimg/backing-dirs
  export LIBIMG_BACKING_DIRS_FILE=$T/no-such-backing-dirs
}
teardown() { common_teardown; }

# img_with BYTE FILE: a 4 MiB image whose every byte is BYTE.
img_with() {
  head -c $((4 * M)) /dev/zero | tr '\0' "\\$(printf %03o "$1")" > "$T/.raw"
  "$BIN/imgconvert" -q "$T/.raw" "$2"
  rm -f "$T/.raw"
}

# first_byte FILE: the first byte of a raw file, in decimal.
first_byte() { od -An -tu1 -N1 "$1" | tr -d ' '; }

@test "issue 15 #1: a backing name that is a symbolic link out of the delta's directory is refused; nothing reads or changes the image it points at" {
  mkdir ct other
  img_with 94 other/secret.img
  chmod 0600 other/secret.img
  sum=$(sha256sum < other/secret.img)
  ln -s ../other/secret.img ct/base.img
  # mkimg refuses to make the clone...
  run_split mkimg --backing base.img ct/c.img
  [ "$status" -ne 0 ]
  [[ "$err" == *"base.img"*"outside the image's directory"* ]]
  [ ! -e ct/c.img ]
  # ...and a clone made elsewhere (or a header written by hand) is refused
  # by every tool that follows it
  "$BIN/mkimg" -q --allow-backing-path --backing base.img ct/c.img
  chmod 0666 ct/c.img
  run_split imgconvert -F libimg -O raw ct/c.img out.raw
  [ "$status" -ne 0 ]
  [[ "$err" == *"outside the image's directory"* ]]
  [ ! -e out.raw ]
  run_split imgcheck ct/c.img
  [ "$status" -ne 0 ]
  run_split imgsnap merge ct/c.img
  [ "$status" -ne 0 ]
  [[ "$err" == *"outside"* ]]
  [ "$(stat -c %a other/secret.img)" = 600 ]
  [ "$(sha256sum < other/secret.img)" = "$sum" ]
  [ -L ct/base.img ]
  [ "$(readlink ct/base.img)" = ../other/secret.img ]
  # the user's explicit "anything" still follows it
  "$BIN/imgconvert" -q -F libimg -O raw --allow-backing-path ct/c.img out.raw
  [ "$(first_byte out.raw)" = 94 ]
  # a link that stays in the directory is fine
  img_with 17 ct/real.img
  ln -s real.img ct/alias.img
  "$BIN/mkimg" -q --backing alias.img ct/d.img
  "$BIN/imgconvert" -q -F libimg -O raw ct/d.img d.raw
  [ "$(first_byte d.raw)" = 17 ]
}

@test "issue 15 #12: a FIFO named as backing file: every tool fails at once, naming it, and the delta stays usable" {
  img_with 1 base.img
  "$BIN/mkimg" -q --backing base.img d.img
  rm base.img
  mkfifo base.img
  sum=$(sha256sum < d.img)
  for cmd in "imginfo d.img" "imgcheck d.img" "imgmap d.img" "imgconvert -F libimg -O raw d.img out.raw" \
             "compact d.img" "growimg d.img +1M" "shrinkimg d.img -1M" "imgsnap merge d.img" \
             "imgsnap create d.img" "mkimg --backing base.img e.img"; do
    run timeout 10 $BIN/$cmd
    echo "$cmd: $status: $output"
    [ "$status" -ne 0 ] && [ "$status" -ne 124 ]
    [[ "$output" == *"base.img"*"not a regular file: a FIFO"* ]]
  done
  [ "$(sha256sum < d.img)" = "$sum" ]
  [ ! -e out.raw ] && [ ! -e e.img ]
  # the FIFO as the image itself
  run timeout 10 "$BIN/imginfo" base.img
  [ "$status" -eq 1 ]
  [[ "$output" == *"base.img: "*"not a regular file: a FIFO"* ]]
  # the delta's lock was released each time
  "$BIN/imgsnap" rebase -u d.img ""
  "$BIN/imgcheck" -q d.img
}

@test "issue 15 #7: an image on a block device is refused clearly; a block device is still a raw source for imgconvert" {
  [ "$(id -u)" -eq 0 ] || skip "needs root (loop devices)"
  [ -c /dev/loop-control ] || skip "needs loop devices"
  img_with 7 a.img
  sum=$(sha256sum < a.img)
  dev=$(losetup -f --show a.img) || skip "losetup failed"
  for cmd in "imginfo @" "imgcheck @" "imgmap @" "compact @" "imgconvert -O raw @ out.raw" \
             "growimg @ +1M"; do
    run_split ${cmd//@/$dev}
    echo "$cmd: $status: $err"
    [ "$status" -ne 0 ]
    [[ "$err" == *"$dev"*"not a regular file: a block device"* ]]
  done
  losetup -d "$dev"
  [ "$(sha256sum < a.img)" = "$sum" ]
  [ ! -e out.raw ]
  # a raw block device is still read as a raw source
  head -c $((4 * M)) /dev/urandom > r.raw
  dev=$(losetup -f --show r.raw)
  run_split imgconvert "$dev" r.img
  losetup -d "$dev"
  [ "$status" -eq 0 ]
  "$BIN/imgconvert" -q -O raw r.img back.raw
  cmp r.raw back.raw
}

# The clones of the template layout for the tests below.
layout() {
  mkdir -p templates containers
  img_with 42 templates/base.img
  chmod 0444 templates/base.img
  tsum=$(sha256sum < templates/base.img)
}

# every_tool CLONE OPTS...: each offline tool on CLONE; all must succeed.
every_tool() {
  local c=$1; shift
  "$BIN/imginfo" "$@" "$c" >/dev/null
  "$BIN/imgcheck" -q "$@" "$c"
  "$BIN/imgmap" "$@" "$c" >/dev/null
  "$BIN/imgconvert" -q -F libimg -O raw "$@" "$c" "$T/flat.raw"
  [ "$(first_byte "$T/flat.raw")" = 42 ]
  rm "$T/flat.raw"
  "$BIN/imgconvert" -q -F libimg "$@" "$c" "$T/flat.img"
  rm "$T/flat.img"
  "$BIN/compact" -q "$@" "$c"
  "$BIN/growimg" -q "$@" "$c" +1M
  "$BIN/shrinkimg" -q "$@" "$c" -1M
  "$BIN/imgsnap" create --name "$(basename "$c").s1" "$@" "$c" >/dev/null
  "$BIN/imgsnap" list "$@" "$c" >/dev/null
  "$BIN/imgsnap" merge "$@" "$c" >/dev/null
  "$BIN/imgcheck" -q "$@" "$c"
}

@test "issue 14 #6: every tool takes --allow-backing-path, and needs it (or an allowed directory) for a clone of a template elsewhere" {
  layout
  "$BIN/mkimg" -q --allow-backing-path --backing "$T/templates/base.img" containers/ct1.img
  for t in imginfo imgcheck imgmap compact growimg shrinkimg imgconvert imgsnap mkimg \
           imgmount imgattach imgserve; do
    "$BIN/$t" --help | grep -q -- --allow-backing-path
  done
  # without it: refused, naming the reference and how to allow it
  for cmd in "imginfo @" "imgcheck @" "imgmap @" "compact @" "imgconvert -F libimg -O raw @ out.raw" \
             "imgsnap list @"; do
    run_split ${cmd//@/containers/ct1.img}
    echo "$cmd: $status: $err"
    [ "$status" -ne 0 ]
    [[ "$err" == *"base.img"*"absolute"*"LIBIMG_BACKING_DIRS"* ]]
  done
  run_split growimg containers/ct1.img +1M
  [ "$status" -ne 0 ]
  run_split shrinkimg containers/ct1.img -1M
  [ "$status" -ne 0 ]
  every_tool containers/ct1.img --allow-backing-path
  [ "$(sha256sum < templates/base.img)" = "$tsum" ]
}

@test "issue 14 #6: a /var/lib/templates + /var/lib/containers layout through LIBIMG_BACKING_DIRS: create, check, convert, compact, grow, snapshot" {
  layout
  # refused without the allow-list
  run_split mkimg --backing ../templates/base.img containers/ct1.img
  [ "$status" -ne 0 ]
  [[ "$err" == *"climbs out"*"LIBIMG_BACKING_DIRS"* ]]
  [ ! -e containers/ct1.img ]
  export LIBIMG_BACKING_DIRS=/nonexistent:$T/templates
  "$BIN/mkimg" -q --backing "$T/templates/base.img" containers/ct1.img
  "$BIN/mkimg" -q --backing ../templates/base.img containers/ct2.img
  every_tool containers/ct1.img
  every_tool containers/ct2.img
  [ "$(sha256sum < templates/base.img)" = "$tsum" ]
  # only the allowed directory: a clone of an image elsewhere stays refused
  mkdir other
  img_with 9 other/x.img
  run_split mkimg --backing "$T/other/x.img" containers/ct3.img
  [ "$status" -ne 0 ]
  [[ "$err" == *"outside the allowed backing directories"* ]]
  unset LIBIMG_BACKING_DIRS
  run_split imginfo containers/ct1.img
  [ "$status" -ne 0 ]
}

@test "issue 14 #6: the backing-dirs file: one absolute directory a line, comments, bad lines reported" {
  layout
  cat > dirs <<EOF
# templates for the containers
   $T/templates

relative/ignored
EOF
  export LIBIMG_BACKING_DIRS_FILE=$T/dirs
  run_split mkimg --backing "$T/templates/base.img" containers/ct1.img
  [ "$status" -eq 0 ]
  [[ "$err" == *"$T/dirs:4: not an absolute directory: ignored"* ]]
  sed -i '/relative/d' dirs
  run_split imgcheck containers/ct1.img
  [ "$status" -eq 0 ]
  [ -z "$err" ]
  every_tool containers/ct1.img
  # LIBIMG_BACKING_DIRS adds to the file; an empty file allows nothing
  : > dirs
  run_split imgcheck containers/ct1.img
  [ "$status" -ne 0 ]
  LIBIMG_BACKING_DIRS=$T/templates "$BIN/imgcheck" -q containers/ct1.img
  LIBIMG_BACKING_DIRS=templates run_split imgcheck containers/ct1.img
  [ "$status" -ne 0 ]
  [[ "$err" == *"LIBIMG_BACKING_DIRS: entry 1 is not an absolute directory"* ]]
}
