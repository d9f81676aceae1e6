#!/usr/bin/env bats
# Bash completion (completion/libimg.bash, issue 16): every tool has one, it
# is installed where bash-completion loads it, its options come from the
# tool's --help at completion time, and every --help option is in the man
# page.

load helpers

setup() {
  common_setup
  [ -f /usr/share/bash-completion/bash_completion ] ||
    skip "bash-completion is needed (scripts/deps.sh installs it)"
  COMP=$ROOT/completion/libimg.bash
}
teardown() { common_teardown; }

# The tool list of the Makefile (tools/*.c but tools/common*.c).
makefile_tools() {
  make -s --no-print-directory -C "$ROOT" -f Makefile \
    -f <(printf 'print-tools:\n\t@echo $(notdir $(TOOLS))\n') print-tools
}

# comp WORD... CUR: COMPREPLY, one a line, for the command line "WORD... CUR"
# (CUR is the word being completed), in a fresh bash that loaded
# bash-completion and the libimg completion, with the built tools first in
# PATH.
comp() {
  PATH=$BIN:$PATH bash --norc --noprofile -c '
    source /usr/share/bash-completion/bash_completion
    source "$1"; shift
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
    COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
    COMPREPLY=()
    _libimg "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf "%s\n" "${COMPREPLY[@]}"' _ "$COMP" "$@"
}

# sorted WORD...: the words, one a line, sorted (to compare with comp | sort).
sorted() { printf '%s\n' "$@" | LC_ALL=C sort; }

# The options of TOOL --help, one a line, sorted, as the completion reads them.
help_opts() {
  bash --norc --noprofile -c 'source "$1"; _libimg_help_opts "$2" | cut -f1' _ "$COMP" "$BIN/$1" |
    LC_ALL=C sort -u
}

@test "issue 16: every tool in the Makefile's tool list has a bash completion" {
  tools=$(makefile_tools)
  [ -n "$tools" ]
  for t in $tools imgctl; do
    run bash --norc --noprofile -c 'source "$1"; complete -p "$2"' _ "$COMP" "$t"
    [ "$status" -eq 0 ] || { echo "no completion for $t"; return 1; }
    [[ "$output" == *"-F _libimg $t"* ]]
  done
}

@test "issue 16: make install puts the completion where bash-completion loads it, under every tool's name" {
  stage=$BATS_TEST_TMPDIR/stage
  make -s --no-print-directory -C "$ROOT" install prefix=/usr DESTDIR="$stage" >/dev/null
  dir=$stage$(pkg-config --variable=completionsdir bash-completion 2>/dev/null ||
              echo /usr/share/bash-completion/completions)
  for t in $(makefile_tools); do
    [ -e "$dir/$t" ] || { echo "no $dir/$t"; return 1; }
    # bash-completion's lazy loader finds it by the command's name alone
    run env XDG_DATA_DIRS="$stage/usr/share" bash --norc --noprofile -c '
      source /usr/share/bash-completion/bash_completion
      __load_completion "$1" && complete -p "$1"' _ "$t"
    [ "$status" -eq 0 ]
    [[ "$output" == *"-F _libimg"* ]]
  done
  # prefix=/usr/local: under the prefix, where bash-completion looks too
  make -s --no-print-directory -C "$ROOT" install prefix=/usr/local DESTDIR="$stage" >/dev/null
  [ -f "$stage/usr/local/share/bash-completion/completions/mkimg" ]
  [ -L "$stage/usr/local/share/bash-completion/completions/imginfo" ]
}

@test "issue 16: completion after '-' offers exactly the options of each tool's --help" {
  for t in $(makefile_tools) imgctl; do
    [ -x "$BIN/$t" ] || continue    # imgctl: once it is built
    want=$(help_opts $t)
    [ -n "$want" ]
    [[ "$want" == *"--help"* ]]
    # (an option with an optional argument is offered as --opt and --opt=)
    got=$(comp $t - | sed 's/=$//' | LC_ALL=C sort -u)
    [ "$got" = "$want" ] || { echo "$t: got [$got] want [$want]"; return 1; }
  done
  got=$(comp mkimg --f)
  for o in --force --from --fs; do grep -qx -- "$o" <<<"$got"; done
  [ -z "$(grep -v -- '^--f' <<<"$got")" ]
  [ "$(comp imgcheck --re)" = --repair ]
  [ "$(comp imgconvert --output)" = --output-format ]
}

@test "issue 16: completion follows --help: an option added to a tool is offered without touching the completion" {
  # A stand-in mkimg whose --help lists options the real one may not have
  # yet, in the forms --help uses (short and long, optional argument,
  # placeholder, options in a parenthesis, two options on one line) and
  # what is not an option ("-d" and "--rootdir" in a description).
  mkdir fake
  cat >fake/mkimg <<'EOF'
#!/bin/sh
cat <<'H'
Usage: mkimg [OPTIONS] FILE SIZE
Create an image.

  -j, --json           print JSON
  -p, --progress       show progress
      --wait[=SECONDS] wait for the lock
  -C, --cache-size SIZE  a size
  --from DIR           copy DIR (mke2fs -d; btrfs: --rootdir)
  -q, --quiet          print nothing (-h, --help; -V, --version)
  -f, --force          overwrite (default: no; see -q)
  -v, --verbose        say more;  -n, --dry-run  change nothing
Exit status: 0 ok.
H
EOF
  chmod +x fake/mkimg
  run comp "$T/fake/mkimg" -
  [ "$status" -eq 0 ]
  [ "$(printf '%s\n' "$output" | LC_ALL=C sort -u)" = \
    "$(sorted --cache-size --dry-run --force --from --help --json --progress --quiet --verbose --version \
            --wait --wait= -C -V -f -h -j -n -p -q -v)" ]
  # an option with an argument: its argument is not a positional argument
  mkdir d1; touch x.img
  [ "$(comp "$T/fake/mkimg" -C 1G "" | LC_ALL=C sort)" = "$(sorted d1 fake x.img)" ]
  run comp "$T/fake/mkimg" -C ""
  [ -z "$output" ]                        # a SIZE: nothing to complete
  run comp "$T/fake/mkimg" -C 1G x.img ""
  [ -z "$output" ]                        # FILE given, SIZE next
  run comp "$T/fake/mkimg" --wait x.img ""
  [ -z "$output" ]                        # --wait takes no separate argument
  run comp "$T/fake/mkimg" --from ""
  [ "$(printf "%s\n" "$output" | LC_ALL=C sort)" = "$(sorted d1 fake)" ]
}

@test "issue 16: completion of images, directories, mount points and sizes" {
  mkdir mnt sub
  touch a.img b.img a.img.snap1 notes.txt
  imgs=$(sorted a.img a.img.snap1 b.img mnt sub)
  for cmd in "mkimg" "compact" "imginfo" "imgmap" "imgcheck -j" "growimg" \
             "shrinkimg" "imgattach" "imgdetach" "imgumount" "imgmount" \
             "mkimg --backing" "imgsnap merge --into" "imgserve -t 4"; do
    got=$(comp $cmd "" | LC_ALL=C sort)
    [ "$got" = "$imgs" ] || { echo "$cmd: got [$got]"; return 1; }
  done
  [ "$(comp mkimg "a" | LC_ALL=C sort)" = "$(sorted a.img a.img.snap1)" ]
  # sizes, counts, labels: nothing
  for cmd in "mkimg a.img" "growimg a.img" "shrinkimg a.img" "mkimg --cluster-size" \
             "mkimg --label" "imgserve -t" "imgserve --cache-size" "imgmount -o"; do
    run comp $cmd ""
    [ -z "$output" ] || { echo "$cmd: got [$output]"; return 1; }
  done
  # a mount point is a directory; --from a directory
  [ "$(comp imgmount a.img "" | LC_ALL=C sort)" = "$(sorted mnt sub)" ]
  [ "$(comp mkimg --from "" | LC_ALL=C sort)" = "$(sorted mnt sub)" ]
  # imgconvert copies from and to raw files too
  [ "$(comp imgconvert "" | LC_ALL=C sort)" = "$(sorted a.img a.img.snap1 b.img mnt notes.txt sub)" ]
  [ "$(comp imgconvert a.img "n")" = notes.txt ]
  # images named otherwise: every file
  [ "$(comp imginfo "n")" = notes.txt ]
  # a device
  [ "$(comp imgdetach /dev/loop-contr)" = /dev/loop-control ]
  [ "$(comp imgumount /dev/loop-contr)" = /dev/loop-control ]
  # the values of an option
  [ "$(comp imgconvert -O "")" = "$(printf 'raw\nlibimg')" ]
  [ "$(comp imgconvert --source-format "l")" = libimg ]
  [ "$(comp imgconvert --output-format=r)" = raw ]
  [ "$(comp mkimg --fs "" | LC_ALL=C sort)" = "$(sorted btrfs ext2 ext3 ext4 xfs)" ]
  [ "$(comp mkimg --fs=x)" = xfs ]
}

@test "issue 16: completion of the imgsnap and imgctl subcommands" {
  touch a.img
  if [ ! -x "$BIN/imgctl" ]; then
    # until imgctl is built here: a stand-in with its --help's usage lines
    mkdir -p "$BATS_TEST_TMPDIR/stand-in"
    cat >"$BATS_TEST_TMPDIR/stand-in/imgctl" <<'EOF'
#!/bin/sh
cat <<'H'
Usage: imgctl [OPTIONS] list
       imgctl [OPTIONS] status IMAGE
       imgctl [OPTIONS] send IMAGE COMMAND [ARGS...]
       imgctl [OPTIONS] grow|shrink IMAGE SIZE [discard-data]
       imgctl [OPTIONS] compact|snapshot|merge|stop IMAGE [ARG]
List the libimg images served.

  -j, --json            print JSON (see imgctl(1))
  -w, --wait[=SECONDS]  list, status: wait for a busy daemon
  -h, --help            show this help
H
EOF
    chmod +x "$BATS_TEST_TMPDIR/stand-in/imgctl"
    PATH=$BATS_TEST_TMPDIR/stand-in:$PATH
  fi
  [ "$(comp imgsnap "" | LC_ALL=C sort)" = "$(sorted create flatten list merge rebase template)" ]
  [ "$(comp imgsnap "cr")" = create ]
  [ "$(comp imgsnap -j "m")" = merge ]
  [ "$(comp imgsnap create "")" = a.img ]
  [ "$(comp imgsnap --name s1 create "")" = a.img ]
  [ "$(comp imgsnap rebase a.img "")" = a.img ]
  [[ "$(comp imgsnap merge --in)" == --into ]]
  [ "$(comp imgctl "" | LC_ALL=C sort)" = \
    "$(sorted compact events fsck grow list low-water merge on-nospace pool qos resume send shrink snapshot status stop)" ]
  [ "$(comp imgctl "s" | LC_ALL=C sort)" = "$(sorted send shrink snapshot status stop)" ]
  [ "$(comp imgctl -j --wait=3 "sta")" = status ]
  [ "$(comp imgctl status "")" = a.img ]
  [ "$(comp imgctl status /dev/loop-contr)" = /dev/loop-control ]
  [ "$(comp imgctl -w5 stop "")" = a.img ]
  [ "$(comp imgctl --w)" = "$(printf -- '--wait\n--wait=')" ]
  run comp imgctl list ""
  [ -z "$output" ]
  run comp imgctl grow a.img ""
  [ -z "$output" ]
  [ "$(comp imgctl shrink a.img 1G "")" = discard-data ]
  [ "$(comp imgctl send a.img "" | LC_ALL=C sort)" = \
    "$(sorted compact events grow low-water merge on-nospace qos resume shrink snapshot status stop)" ]
  [ "$(comp imgctl send a.img gr)" = grow ]
  [ "$(comp imgctl fsck a.img "")" = yes ]
  run comp imgctl send a.img grow ""
  [ -z "$output" ]
}

@test "issue 16: every option in a tool's --help is documented in its man page" {
  for t in $(makefile_tools) imgctl; do
    [ -x "$BIN/$t" ] || continue    # imgctl: once it is built
    [ -f "$ROOT/man/$t.1" ] || { echo "no man/$t.1"; return 1; }
    # the tags of the page's paragraphs (the line after .TP or .IP, or an
    # .IP's own argument) as text: \- is a dash, font changes go
    tags=$(sed -n -e '/^\.TP/{n;p}' -e 's/^\.IP //p' "$ROOT/man/$t.1" |
           sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\f([A-Z][A-Z]//g')
    for o in $(help_opts $t); do
      grep -qE -- "(^|[^A-Za-z0-9-])$o([^A-Za-z0-9-]|\$)" <<<"$tags" ||
        { echo "$t: $o is in --help but documented in no paragraph of man/$t.1"; return 1; }
    done
  done
}
