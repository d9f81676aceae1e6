#!/usr/bin/env bats
# The rules of a handle as a program using libimg.so sees them (the tools
# have no way to reach these states): a delta opened without its backing
# chain never changes what the disk shows (issue 14 #5), and a failed sync
# is final for the handle (issue 14 #8).  The library calls go through
# python's ctypes, like write_at in helpers.bash.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

# lib SCRIPT ARGS...: runs the python SCRIPT with `lib` (libimg.so, or
# $LIBIMG_SO), `h` (opened by open_img(path, flags)) and a few helpers
# defined.
lib() {
  [ -n "$PY" ] || skip "python3 is needed to call libimg"
  local script=$1; shift
  "$PY" - "${LIBIMG_SO:-$BUILD/lib/libimg.so}" "$@" <<PYEOF
import ctypes, errno, sys
lib = ctypes.CDLL(sys.argv[1])
lib.img_last_error.restype = ctypes.c_char_p
lib.img_pwrite.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
lib.img_pwrite.restype = ctypes.c_ssize_t
lib.img_pread.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
lib.img_pread.restype = ctypes.c_ssize_t
lib.img_resize.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint]
lib.img_flush.argtypes = [ctypes.c_void_p]
lib.img_close.argtypes = [ctypes.c_void_p]
def open_img(path, flags):
    h = ctypes.c_void_p()
    r = lib.img_open(path.encode(), flags, ctypes.byref(h))
    if r:
        sys.exit("open %s: %d %s" % (path, r, lib.img_last_error().decode()))
    return h
def read(h, n, off):
    b = ctypes.create_string_buffer(n)
    assert lib.img_pread(h, b, n, off) == n, lib.img_last_error()
    return b.raw
RDWR, NO_BACKING = 0x01, 0x10
$script
PYEOF
}

@test "issue 14 #5: a delta opened without its backing chain is not grown (-EROFS); grown with it, the new space reads zeros" {
  head -c $((4 * M)) /dev/zero | tr '\0' '\252' > base.raw
  "$BIN/imgconvert" -q base.raw base.img
  "$BIN/mkimg" -q --backing base.img d.img 2M
  sum=$(sha256sum < d.img)
  lib '
h = open_img(sys.argv[2], RDWR | NO_BACKING)
r = lib.img_resize(h, 4 << 20, 0)
print("resize without the chain:", r)
assert r == -errno.EROFS, r
assert b"backing" in lib.img_last_error(), lib.img_last_error()
assert lib.img_close(h) == 0
' d.img
  [ "$("$BIN/imginfo" --json d.img | jq .virtual_size)" = $((2 * M)) ]
  lib '
h = open_img(sys.argv[2], RDWR)
assert lib.img_resize(h, 4 << 20, 0) == 0, lib.img_last_error()
assert read(h, 2 << 20, 2 << 20) == bytes(2 << 20), "the grown area shows the base"
assert read(h, 4096, 0) == b"\xaa" * 4096
assert lib.img_close(h) == 0
' d.img
  "$BIN/imgcheck" -q d.img
}

@test "issue 14 #8: after a failed sync every write and flush fails (-EIO) until reopened; the reopened image is consistent" {
  "$BIN/mkimg" -q a.img 8M
  printf 'old' > old
  write_at a.img old 0
  # the open syncs once (its header); the data sync of img_flush is the
  # second: it fails, and what was written since the open is dropped.  The
  # library with the test hook reads LIBIMG_FAULT (the installed one does
  # not: CONTRIBUTING.md, the fault hook).
  [ -e "$BUILD/faultbin/libimg.so" ] || { echo "$BUILD/faultbin/libimg.so missing (make tests)" >&2; return 1; }
  LIBIMG_SO=$BUILD/faultbin/libimg.so LIBIMG_FAULT=flush:2:EIO,drop lib '
h = open_img(sys.argv[2], RDWR)
assert lib.img_pwrite(h, b"new" * 1000, 3000, 0) == 3000
assert lib.img_pwrite(h, b"x" * 4096, 4096, 3 << 20) == 4096
r = lib.img_flush(h)
print("flush:", r)
assert r == -errno.EIO, r
# sticky: nothing more is written, nothing is reported durable
assert lib.img_pwrite(h, b"y" * 4096, 4096, 5 << 20) == -errno.EIO
assert lib.img_flush(h) == -errno.EIO
assert lib.img_close(h) == -errno.EIO
' a.img
  # reopened: consistent, and each range reads its old or its new bytes
  "$BIN/imgcheck" -r -q a.img || [ $? -eq 3 ]
  "$BIN/imgcheck" -q a.img
  lib '
h = open_img(sys.argv[2], 0)
head = read(h, 3, 0)
assert head in (b"old", b"new"), head
assert read(h, 4096, 3 << 20) in (bytes(4096), b"x" * 4096)
assert read(h, 4096, 5 << 20) == bytes(4096)
assert lib.img_close(h) == 0
' a.img
}
