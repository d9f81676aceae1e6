#!/bin/sh
# Prints libimg's version, MAJOR.MINOR.PATCH, from its one source: the
# LIBIMG_VERSION_* defines of libimg/include/libimg.h.  Used by the Makefile
# (library file name, libimg.pc, the man pages' .TH line) and the tests.
cd "$(dirname "$0")/.." || exit 1
sed -n 's/^#define LIBIMG_VERSION_\(MAJOR\|MINOR\|PATCH\)  *\([0-9][0-9]*\)$/\1 \2/p' \
	libimg/include/libimg.h |
awk '{ v[$1] = $2 } END { if (!("MAJOR" in v) || !("MINOR" in v) || !("PATCH" in v)) exit 1
       print v["MAJOR"] "." v["MINOR"] "." v["PATCH"] }'
