#!/usr/bin/env bats
# The build (issue 17): the dependency step comes before the first compile,
# make install never installs packages, a header change rebuilds only the
# objects that include it, the version has one source.  Every make here runs
# with -n (prints, runs nothing) except in a fresh copy of the tree.

load helpers

setup() { common_setup; }
teardown() { common_teardown; }

# make without what the calling make (make check) or run.sh put in the
# environment: its jobserver, its BUILD, V.
mk() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u BUILD -u V make --no-print-directory "$@"; }

# A fresh clone of this tree: its tracked and new files as they are now
# (uncommitted edits included), no build directory.
fresh_clone() {
  command -v git >/dev/null && git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 ||
    skip "$ROOT is not a git checkout"
  F=$T/fresh
  mkdir -p "$F"
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
     while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
     tar --null -T - -cf -) | tar -C "$F" -xf -
  [ -f "$F/Makefile" ] && [ ! -e "$F/build" ]
}

# The build directory of the built tree, relative to $ROOT (the .d files
# name the objects as the build named them).
built_tree() {
  case $BUILD in "$ROOT"/*) REL=${BUILD#"$ROOT"/} ;; *) skip "$BUILD is not under $ROOT" ;; esac
  [ -e "$BUILD/.deps-ok" ] || skip "$BUILD was not built by make"
  # up to date, else -n would list compiles that have nothing to do with the test
  local stale
  stale=$(cd "$ROOT" && mk -n BUILD="$REL" V= lib tools tests | grep -c '^echo "  CC ' || true)
  [ "$stale" -eq 0 ] || skip "$BUILD is not up to date (make first)"
}

# The sources make -n would compile: "echo "  CC      SRC"" lines.
compiled() { sed -n 's/^echo "  CC  *\(.*\)"$/\1/p'; }

@test "issue 17 #1: in a fresh clone the first command of make -n demo, check and all is the dependency step" {
  fresh_clone
  for goal in demo check all; do
    first=$(cd "$F" && mk -n "$goal" | sed -n '/[^[:space:]]/{p;q}')
    [ "$first" = scripts/deps.sh ] || { echo "make -n $goal starts with: $first"; false; }
  done
}

@test "issue 17 #2: make install never installs packages (built tree: no deps.sh; fresh clone: deps.sh --check build only)" {
  built_tree
  out=$(cd "$ROOT" && mk -n install BUILD="$REL" prefix="$T/p")
  [ -n "$out" ]
  if printf '%s\n' "$out" | grep -E 'deps\.sh|apt-get'; then false; fi
  fresh_clone
  out=$(cd "$F" && mk -n install prefix="$T/p")
  printf '%s\n' "$out" | grep -qx 'scripts/deps.sh --check build'
  if printf '%s\n' "$out" | grep -E 'deps\.sh|apt-get' | grep -v -- '--check build'; then false; fi
  # the check names what is missing and fails, installing nothing
  run env PATH=/nonexistent /bin/bash "$F/scripts/deps.sh" --check build
  [ "$status" -eq 1 ]
  [[ $output == *"libblkid-dev"*"liblz4-dev"* ]]
  [[ $output != *"installing"* ]]
}

@test "issue 17 #3: a changed header rebuilds only the objects that include it" {
  built_tree
  all=$(cd "$ROOT" && ls "$REL"/obj/*/*.o "$REL"/obj/*/*/*.o | wc -l)
  for h in libimg/format.h tools/common_fs.h tools/online/mount.h tests/helpers/memfs.h; do
    [ -f "$ROOT/$h" ] || continue
    got=$(cd "$ROOT" && mk -n -W "$h" BUILD="$REL" V= lib tools tests | compiled | sort)
    # the includers, by the compiler's own record (.d: "OBJ: SRC HEADERS...")
    # (objects of sources that no longer exist, left by an older build,
    # are no includers)
    want=$(cd "$ROOT" && grep -l -- "$h" "$REL"/obj/*/*.d "$REL"/obj/*/*/*.d |
           sed -e "s|^$REL/obj/||" -e 's|\.d$|.c|' | while read -r c; do
             [ ! -f "$c" ] || echo "$c"; done | sort)
    [ -n "$want" ] || { echo "no object records including $h"; false; }
    [ "$got" = "$want" ] || { echo "$h: compiled:"; echo "$got"; echo "includers:"; echo "$want"; false; }
    n=$(printf '%s\n' "$got" | wc -l)
    echo "# $h: $n of $all objects" >&3
    [ "$n" -lt "$all" ]
  done
}

@test "issue 17 #4: the version has one source, libimg.h (man pages and libimg.pc take it at install)" {
  ver=$("$ROOT/scripts/version.sh")
  [[ $ver =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]
  # no other file of the tree states it
  for f in "$ROOT"/man/*.[17]; do
    head -n 5 "$f" | grep -q '^\.TH .*"libimg @VERSION@"' || { echo "$f: .TH without @VERSION@"; false; }
  done
  if grep -rnF "$ver" "$ROOT"/man "$ROOT"/Makefile "$ROOT"/libimg/libimg.pc.in "$ROOT"/scripts; then false; fi
  # the installed man pages carry it
  built_tree
  (cd "$ROOT" && mk -s install BUILD="$REL" prefix=/usr DESTDIR="$T/stage" >/dev/null)
  grep -q "^\.TH MKIMG 1 .*\"libimg $ver\"" "$T/stage/usr/share/man/man1/mkimg.1"
  grep -q "^\.TH LIBIMG 7 .*\"libimg $ver\"" "$T/stage/usr/share/man/man7/libimg.7"
  grep -qx "Version: $ver" "$T/stage/usr/lib/pkgconfig/libimg.pc"
  if grep -rn '@VERSION@' "$T/stage/usr/share/man"; then false; fi
}

@test "issue 17: each tool links only the shared objects its line of the Makefile's table names (imgmap, imgcheck, imgconvert: nothing of tools/online)" {
  built_tree
  table=$(cd "$ROOT" && mk -s tool-links BUILD="$REL")
  [ -n "$table" ]
  # the functions each shared object defines (linked as objects, whole)
  # (of the sources that exist: an older build may have left others)
  objs=$(cd "$ROOT/$REL/obj/tools" && ls common*.o online/*.o | sed 's/\.o$//' |
         while read -r o; do [ ! -f "$ROOT/tools/$o.c" ] || echo "$o"; done)
  [[ $objs == *online/control* ]]
  while IFS= read -r line; do
    tool=${line%%:*}
    uses=" ${line#*:} "
    [ -x "$BUILD/bin/$tool" ] || { echo "no $BUILD/bin/$tool"; false; }
    # (hidden visibility: the functions are local, "t", in the program)
    have=$(nm --defined-only "$BUILD/bin/$tool" | awk '$2 == "T" || $2 == "t" {print $3}' | sort -u)
    for o in $objs; do
      defs=$(nm --defined-only -g "$ROOT/$REL/obj/tools/$o.o" | awk '$2 == "T" {print $3}' | sort -u)
      [ -n "$defs" ] || continue
      linked=$(comm -12 <(printf '%s\n' "$defs") <(printf '%s\n' "$have") | wc -l)
      if [[ $uses == *" $o "* ]]; then
        [ "$linked" -eq "$(printf '%s\n' "$defs" | wc -l)" ] ||
          { echo "$tool: $o is in its line but not linked whole"; false; }
      else
        [ "$linked" -eq 0 ] || { echo "$tool links $o, which its line does not name: $line"; false; }
      fi
    done
  done <<< "$table"
  # what the issue asks for, stated directly
  for tool in imgmap imgcheck imgconvert; do
    if nm "$BUILD/bin/$tool" | grep -E ' [Tt] (online_|loop_|fs_offline_)'; then
      echo "$tool links tools/online"; false
    fi
  done
  [[ $(grep '^imginfo:' <<< "$table") == "imginfo: online/rundir common_fs common" ]]
}
