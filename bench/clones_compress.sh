#!/usr/bin/env bash
# Thin clones and compressed images against qemu-img, same run, same data.
#  1. 100 clones of a 1 GiB template: mkimg --backing vs
#     qemu-img create -f qcow2 -b base.qcow2 -F qcow2 (time, host space).
#  2. Compression of a realistic source (system files: binaries, libraries,
#     text; 256 MiB by default): imgconvert -c (lz4) vs qemu-img convert -c
#     -O qcow2 (zlib, and zstd when this qemu has it): time and size; then
#     reading the compressed image back to raw: time and throughput.
# Page cache dropped before each timed run (when root).  Settings:
# BENCH_DIR (/var/tmp), CLONES (100), COMP_MIB (256), RUNS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/libimg-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
runs=${RUNS:-3}
nclones=${CLONES:-100}
mib=${COMP_MIB:-256}
have_qemu=$(command -v qemu-img >/dev/null && echo 1 || echo 0)
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "scale=2; $1 / $2" | bc; }
du_k() { du -k -c "$@" | tail -1 | cut -f1; }

# ---- 1. clones ------------------------------------------------------------
head -c 256M /dev/urandom > "$dir/t.raw"; truncate -s 1G "$dir/t.raw"
"$BIN/imgconvert" -q "$dir/t.raw" "$dir/base.img"
tc_l=(); tc_q=()
for r in $(seq "$runs"); do
  rm -rf "$dir/cl" "$dir/cq"; mkdir "$dir/cl" "$dir/cq"
  cp "$dir/base.img" "$dir/cl/base.img"
  drop; t0=$(now)
  for i in $(seq "$nclones"); do "$BIN/mkimg" -q --backing base.img "$dir/cl/c$i.img"; done
  sync; t1=$(now); tc_l+=("$(echo "$t1 - $t0" | bc)")
  if [ "$have_qemu" = 1 ]; then
    qemu-img convert -O qcow2 "$dir/t.raw" "$dir/cq/base.qcow2"
    drop; t0=$(now)
    for i in $(seq "$nclones"); do
      qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$dir/cq/c$i.qcow2"
    done
    sync; t1=$(now); tc_q+=("$(echo "$t1 - $t0" | bc)")
  fi
done
l_t=$(printf '%s\n' "${tc_l[@]}" | median)
l_k=$(du_k "$dir"/cl/c*.img)
echo "$nclones clones of a 1 GiB template (256 MiB of data), median of $runs:"
printf '  %-34s %8.3f s  %8d KiB host space (all clones)\n' "mkimg --backing" "$l_t" "$l_k"
if [ "$have_qemu" = 1 ]; then
  q_t=$(printf '%s\n' "${tc_q[@]}" | median)
  q_k=$(du_k "$dir"/cq/c*.qcow2)
  printf '  %-34s %8.3f s  %8d KiB host space (all clones)\n' "qemu-img create -b (qcow2)" "$q_t" "$q_k"
  echo "  ratio libimg/qcow2: time $(ratio "$l_t" "$q_t"), space $(ratio "$l_k" "$q_k")"
fi
rm -rf "$dir/cl" "$dir/cq" "$dir/t.raw" "$dir/base.img"

# ---- 2. compression ---------------------------------------------------------
# A realistic source: system files (ELF binaries, libraries, text, data).
tar -cf - /usr/lib /usr/share /usr/bin 2>/dev/null | head -c "${mib}M" > "$dir/src.raw" || true
truncate -s "${mib}M" "$dir/src.raw"
methods=(lz4)
[ "$have_qemu" = 1 ] && methods+=(zlib)
if [ "$have_qemu" = 1 ] && qemu-img create -q -f qcow2 -o compression_type=zstd "$dir/z.qcow2" 1M 2>/dev/null; then
  methods+=(zstd)
fi
rm -f "$dir/z.qcow2"
declare -A CT RT SZ
for r in $(seq "$runs"); do
  for m in "${methods[@]}"; do
    rm -f "$dir/c.$m" "$dir/back.raw"
    drop; t0=$(now)
    case $m in
      lz4)  "$BIN/imgconvert" -q -c "$dir/src.raw" "$dir/c.$m" ;;
      zlib) qemu-img convert -c -O qcow2 "$dir/src.raw" "$dir/c.$m" ;;
      zstd) qemu-img convert -c -O qcow2 -o compression_type=zstd "$dir/src.raw" "$dir/c.$m" ;;
    esac
    sync; t1=$(now); CT[$m]+="$(echo "$t1 - $t0" | bc) "
    SZ[$m]=$(du -k "$dir/c.$m" | cut -f1)
    drop; t0=$(now)
    case $m in
      lz4)  "$BIN/imgconvert" -q -O raw "$dir/c.$m" "$dir/back.raw" ;;
      *)    qemu-img convert -O raw "$dir/c.$m" "$dir/back.raw" ;;
    esac
    sync; t1=$(now); RT[$m]+="$(echo "$t1 - $t0" | bc) "
    cmp -s "$dir/src.raw" "$dir/back.raw" || { echo "$m: round trip differs" >&2; exit 1; }
  done
done
src_k=$(du -k "$dir/src.raw" | cut -f1)
echo
echo "compression of $mib MiB of system files (/usr: binaries, libraries, text; $src_k KiB on the host), median of $runs:"
printf '  %-28s %10s %10s %12s %12s\n' method "size KiB" "write s" "read s" "read MiB/s"
for m in "${methods[@]}"; do
  c=$(printf '%s\n' ${CT[$m]} | median); rd=$(printf '%s\n' ${RT[$m]} | median)
  case $m in lz4) n="imgconvert -c (lz4)" ;; zlib) n="qemu-img -c qcow2 (zlib)" ;; zstd) n="qemu-img -c qcow2 (zstd)" ;; esac
  printf '  %-28s %10d %10.2f %12.2f %12.1f\n' "$n" "${SZ[$m]}" "$c" "$rd" "$(echo "$mib / $rd" | bc -l)"
  eval "C_$m=$c R_$m=$rd"
done
for m in zlib zstd; do
  [[ " ${methods[*]} " == *" $m "* ]] || continue
  c=C_$m; rd=R_$m
  echo "  ratio lz4/$m: size $(ratio "${SZ[lz4]}" "${SZ[$m]}"), write time $(ratio "$C_lz4" "${!c}"), read time $(ratio "$R_lz4" "${!rd}")"
done
