#!/usr/bin/env bash
# Installs what libimg needs to build and test, when something is missing.
# As root it uses apt-get; otherwise it prints the packages to install.
#   scripts/deps.sh --check build   only checks the packages the build needs
#                                   (make install's step): names the missing
#                                   ones and fails, never installs.
set -euo pipefail

check_build=0
case "${1:-}" in
  "") ;;
  --check) [ "${2:-}" = build ] || { echo "usage: $0 [--check build]" >&2; exit 2; }
           check_build=1 ;;
  *) echo "usage: $0 [--check build]" >&2; exit 2 ;;
esac

# package : what proves it is there (a command, or pkg-config module "pc:NAME")
# What the build (make all, make install) needs:
BUILD_REQS=(
  "build-essential:cc"
  "pkg-config:pkg-config"
  "libblkid-dev:pc:blkid"
  "libext2fs-dev:pc:ext2fs"
  "comerr-dev:pc:com_err"
  "liburing-dev:pc:liburing"
  "liblz4-dev:pc:liblz4"
  "libfuse3-dev:pc:fuse3"
)
# and the tests, the demo, fuzzing and benchmarks besides:
REQS=(
  "${BUILD_REQS[@]}"
  "fuse3:fusermount3"
  "e2fsprogs:mke2fs"
  "xfsprogs:mkfs.xfs"
  "btrfs-progs:mkfs.btrfs"
  "bats:bats"
  "jq:jq"
  "bash-completion:file:/usr/share/bash-completion/bash_completion"
  "python3-jsonschema:file:/usr/lib/python3/dist-packages/jsonschema/__init__.py"   # tests: JSON output validated against tools/schema
  "clang:clang"
  "libclang-rt-14-dev:file:/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a"
  "util-linux:losetup"
  "xxd:xxd"
  "bc:bc"
  "qemu-utils:qemu-img"
  "qemu-system-common:qemu-storage-daemon"
  "fio:fio"
  "mount:mount"
  "time:/usr/bin/time"
)

[ "$check_build" = 1 ] && REQS=("${BUILD_REQS[@]}")
missing=()
for r in "${REQS[@]}"; do
  pkg=${r%%:*}; what=${r#*:}
  case $what in
    pc:*)   pkg-config --exists "${what#pc:}" 2>/dev/null || missing+=("$pkg") ;;
    file:*) [ -e "${what#file:}" ] || missing+=("$pkg") ;;
    *)      command -v "$what" >/dev/null 2>&1 || missing+=("$pkg") ;;
  esac
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$check_build" = 1 ]; then
  echo "libimg: the build needs packages that are missing: ${missing[*]}" >&2
  echo "libimg: install them (make deps, or apt-get install ${missing[*]}), then make; make install installs none" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "libimg: missing build/test dependencies: ${missing[*]}" >&2
  echo "libimg: install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "libimg: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
