#!/usr/bin/env bash
# Installs into a staging directory and builds a tiny program against the
# installed library through pkg-config, statically and dynamically; checks
# that nothing installed reads the tests' LIBIMG_FAULT.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
make --no-print-directory -s install prefix=/usr DESTDIR="$stage" >/dev/null
for f in usr/include/libimg.h usr/lib/libimg.so usr/lib/libimg.a usr/lib/pkgconfig/libimg.pc \
         usr/share/libimg/schema/mkimg.json usr/share/libimg/schema/error.json \
         usr/share/man/man7/libimg.7; do
  [ -e "$stage/$f" ] || { echo "missing $f in the staged install" >&2; exit 1; }
done
cat >"$stage/prog.c" <<'C'
#include <errno.h>
#include <libimg.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv)
{
	struct img_create_opts o = { .virtual_size = 1 << 20, .flags = IMG_CREATE_OVERWRITE };
	struct img *img;
	struct img_fs_info fi;
	char buf[5] = { 0 };
	if (argc < 2 || img_create(argv[1], &o) || img_open(argv[1], IMG_OPEN_RDWR, &img))
		return 1;
	if (img_pwrite(img, "hi!", 4, 1000) != 4 || img_pread(img, buf, 4, 1000) != 4 || strcmp(buf, "hi!"))
		return 1;
	/* libblkid and libext2fs come in through Requires.private */
	if (img_fs_probe(img, &fi) != -ENOMEDIUM)
		return 1;
	printf("libimg %s: ok\n", LIBIMG_VERSION_STRING);
	return img_close(img) ? 1 : 0;
}
C
export PKG_CONFIG_PATH="$stage/usr/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$stage"
cc "$stage/prog.c" $(pkg-config --cflags libimg) $(pkg-config --libs libimg) -o "$stage/prog-dyn"
static_libs=" $(pkg-config --static --libs libimg) "
cc "$stage/prog.c" $(pkg-config --cflags libimg) "$stage/usr/lib/libimg.a" ${static_libs/ -limg / } -o "$stage/prog-static"
LD_LIBRARY_PATH="$stage/usr/lib" "$stage/prog-dyn" "$stage/a.img"
"$stage/prog-static" "$stage/b.img"
# only the public symbols are exported
extra=$(nm -D --defined-only "$stage/usr/lib/libimg.so" | awk '$2 == "T" && $3 !~ /^img_/' | wc -l)
[ "$extra" -eq 0 ] || { echo "libimg.so exports non-img_ symbols" >&2; exit 1; }
readelf -d "$stage/usr/lib/libimg.so" | grep -q 'SONAME.*libimg.so.0' || { echo "bad soname" >&2; exit 1; }
# The fault hook is the tests' (tests/helpers/fault_env.c, linked only into
# $(BUILD)/faultbin and the tests): nothing installed reads LIBIMG_FAULT.
for f in "$stage"/usr/lib/libimg.so "$stage"/usr/lib/libimg.a "$stage"/usr/bin/*; do
  if strings -a "$f" | grep -q LIBIMG_FAULT || nm -A "$f" 2>/dev/null | grep -q imgi_io_fault_from_env; then
    echo "$f: reads LIBIMG_FAULT (the test-only fault hook is installed)" >&2; exit 1
  fi
done
LIBIMG_FAULT=write:1:EIO,sticky LD_LIBRARY_PATH="$stage/usr/lib" "$stage/prog-dyn" "$stage/c.img" >/dev/null ||
  { echo "the installed libimg.so obeys LIBIMG_FAULT" >&2; exit 1; }
LIBIMG_FAULT=write:1:EIO,sticky "$stage/usr/bin/mkimg" -q "$stage/d.img" 1M ||
  { echo "the installed mkimg obeys LIBIMG_FAULT" >&2; exit 1; }
echo "test-install: ok"
