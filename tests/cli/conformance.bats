#!/usr/bin/env bats
# The conformance vectors of format-spec/vectors/ (issue 22): every vector
# gets its verdict from the library through the tools (imgconvert -O raw
# for the verdict and the sha256 of the raw disk, imgcheck for what a check
# finds), the vectors are left unchanged by it, and gen.py reproduces the
# checked-in files byte for byte.  One test per category of the manifest;
# a failing test names every vector that disagrees.

load helpers

V=$ROOT/format-spec/vectors

# The tools open the vectors read-only, but a copy is checked anyway (one
# for the file, compared with the originals after each test): a dirty
# vector must never be replayed into the checked-in file.
setup_file() {
  cp -RP "$ROOT/format-spec/vectors" "$BATS_FILE_TMPDIR/v"
}

# The image files (and links) of the suite, relative to DIR.
image_files() { (cd "$1" && find . -name '*.img' | sed 's|^\./||' | sort); }

setup() {
  common_setup
  [ -n "$PY" ] || skip "python3 missing"
  command -v jq >/dev/null || skip "jq missing"
  C=$BATS_FILE_TMPDIR/v
}
teardown() { common_teardown; }

# imgconvert's and imgcheck's exit statuses for a verdict (imgconvert(1),
# imgcheck(1)): opens 0/by check, corrupt 3/2, unsupported 1/63 (with the
# message "needs a newer libimg"), chain-error 4/4.  A corruption detected
# only when the data is read (a compressed payload's contents) is not
# found by imgcheck, which checks the metadata: 0 there.
convert_status() {
  case $1 in opens) echo 0 ;; corrupt) echo 3 ;; unsupported) echo 1 ;; chain-error) echo 4 ;; esac
}
check_status() {
  case $1/$2 in
    opens/clean) echo 0 ;; opens/damaged) echo 2 ;; opens/leaks) echo 3 ;;
    corrupt/read) echo 0 ;; corrupt/*) echo 2 ;; unsupported/*) echo 63 ;; chain-error/*) echo 4 ;;
  esac
}

# verify_category CAT: every vector of category CAT; prints one line per
# disagreement and fails if there is any.
verify_category() {
  local cat=$1 n=0 bad=() name file verdict check size sum st want got
  while IFS=$'\t' read -r name file verdict check size sum; do
    n=$((n + 1))
    rm -f "$T/out.raw"
    "$BIN/imgconvert" -q -F libimg -O raw "$C/$file" "$T/out.raw" 2>"$T/err" && st=0 || st=$?
    want=$(convert_status "$verdict")
    if [ "$st" -ne "$want" ]; then
      bad+=("$name: imgconvert -O raw exited $st, want $want ($verdict): $(head -c 300 "$T/err")")
    elif [ "$verdict" = unsupported ] && ! grep -q "newer libimg" "$T/err"; then
      bad+=("$name: unsupported without 'needs a newer libimg': $(head -c 300 "$T/err")")
    elif [ "$verdict" = opens ]; then
      got=$(stat -c %s "$T/out.raw")
      [ "$got" = "$size" ] || bad+=("$name: raw output of $got bytes, want $size")
      got=$(sha256sum "$T/out.raw" | cut -d' ' -f1)
      [ "$got" = "$sum" ] || bad+=("$name: sha256 of the raw disk $got, want $sum")
    fi
    "$BIN/imgcheck" "$C/$file" >"$T/out" 2>&1 && st=0 || st=$?
    want=$(check_status "$verdict" "$check")
    [ "$st" -eq "$want" ] ||
      bad+=("$name: imgcheck exited $st, want $want ($verdict/$check): $(head -c 300 "$T/out" | tr '\n' ' ')")
  done < <(jq -r --arg c "$cat" '.vectors[] | select(.category == $c) |
             [.name, .file, .verdict, (.check // .detected // "-"), (.virtual_size // 0), (.sha256 // "-")] | @tsv' \
           "$V/vectors.json")
  [ "$n" -gt 0 ] || { echo "no vectors in category $cat"; return 1; }
  # read-only: nothing the tools did changed a vector
  for f in $(image_files "$V"); do cmp -s "$V/$f" "$C/$f" || echo "$f changed"; done >"$T/changed"
  [ ! -s "$T/changed" ] || bad+=("vectors changed by the tools: $(tr '\n' ' ' <"$T/changed")")
  if [ ${#bad[@]} -gt 0 ]; then
    printf '%s\n' "${bad[@]}"
    echo "${#bad[@]} disagreement(s) in $n vectors of category $cat"
    return 1
  fi
}

@test "issue 22: gen.py reproduces the checked-in vectors byte for byte" {
  "$PY" "$V/gen.py" "$T/gen"
  (cd "$T/gen" && find . ! -type d | sort) >"$T/new"
  (cd "$V" && find . ! -type d ! -name gen.py ! -name run.py ! -name README.md | sort) >"$T/old"
  diff "$T/old" "$T/new"
  for f in $(cat "$T/new"); do
    cmp "$V/$f" "$T/gen/$f"
    [ "$(stat -c %F "$V/$f")" = "$(stat -c %F "$T/gen/$f")" ]
  done
  (cd "$V" && sha256sum -c --quiet SHA256SUMS)
}

@test "issue 22: the manifest names every vector file, each category has vectors" {
  jq -r '.vectors[].files[]' "$V/vectors.json" | sort -u >"$T/named"
  image_files "$V" >"$T/present"
  diff "$T/named" "$T/present"
  for c in clean header features log compressed chain bat; do
    [ "$(jq --arg c "$c" '[.vectors[] | select(.category == $c)] | length' "$V/vectors.json")" -gt 0 ]
  done
  # an opening vector has its sha256 and size, a refused one none
  [ "$(jq '[.vectors[] | select(.verdict == "opens" and (.sha256 == null or .check == null))] | length' "$V/vectors.json")" = 0 ]
  [ "$(jq '[.vectors[] | select(.verdict != "opens" and .sha256 != null)] | length' "$V/vectors.json")" = 0 ]
}

@test "issue 22: conformance vectors, clean images (FORMAT.md 3, 4)" { verify_category clean; }
@test "issue 22: conformance vectors, header copies and fields (FORMAT.md 2, 3)" { verify_category header; }
@test "issue 22: conformance vectors, feature bits (FORMAT.md 3, 3.1, 3.2)" { verify_category features; }
@test "issue 22: conformance vectors, the log (FORMAT.md 5)" { verify_category log; }
@test "issue 22: conformance vectors, compressed clusters (FORMAT.md 4.2)" { verify_category compressed; }
@test "issue 22: conformance vectors, backing chains (FORMAT.md 3.1)" { verify_category chain; }
@test "issue 22: conformance vectors, BAT blocks and entries (FORMAT.md 4, 4.1)" { verify_category bat; }
@test "issue 22: conformance vectors, the edges issue 22 decided" { verify_category edge; }

@test "issue 22: a vector marked read-only is not opened for writing" {
  local name file
  for file in $(jq -r '.vectors[] | select(.read_only == true) | .file' "$V/vectors.json"); do
    cp "$C/$file" "$T/before"
    run_split growimg "$C/$file" 1M
    [ "$status" -ne 0 ] || { echo "$file: growimg succeeded"; false; }
    cmp "$C/$file" "$T/before"
  done
}

@test "issue 22: run.py, the runner for other implementations, agrees with libimg's reader and catches a wrong one" {
  cat >"$T/reader" <<EOF
#!/bin/sh
"$BIN/imgconvert" -q -F libimg -O raw "\$1" "\$2" 2>"$T/rerr"
case \$? in
  0) exit 0 ;; 3) exit 10 ;; 4) exit 12 ;;
  1) grep -q "needs a newer libimg" "$T/rerr" && exit 11; exit 1 ;;
  *) exit 1 ;;
esac
EOF
  chmod +x "$T/reader"
  run "$PY" "$V/run.py" --category clean --category header --category features --category chain "$T/reader"
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  [[ "$output" == *" vectors agree" ]]
  # a reader that shows every image as an empty disk fails the suite
  printf '#!/bin/sh\n: > "$2"\n' >"$T/empty-reader"
  chmod +x "$T/empty-reader"
  run "$PY" "$V/run.py" --category clean "$T/empty-reader"
  [ "$status" -eq 1 ]
  [[ "$output" == *"FAIL data: disk of 0 bytes"* ]] || { echo "$output"; false; }
}
