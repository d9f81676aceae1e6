#!/usr/bin/env bash
# Installs what libimg needs to build and test, when something is missing.
# As root it uses apt-get; otherwise it prints the packages to install.
set -euo pipefail

# package : what proves it is there (a command, or pkg-config module "pc:NAME")
REQS=(
  "build-essential:cc"
  "pkg-config:pkg-config"
  "libblkid-dev:pc:blkid"
  "libext2fs-dev:pc:ext2fs"
  "comerr-dev:pc:com_err"
  "liburing-dev:pc:liburing"
  "liblz4-dev:pc:liblz4"
  "libfuse3-dev:pc:fuse3"
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

if [ "$(id -u)" -ne 0 ]; then
  echo "libimg: missing build/test dependencies: ${missing[*]}" >&2
  echo "libimg: install them with: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "libimg: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
