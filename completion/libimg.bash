# Bash completion for the libimg tools (installed by `make install` as
# COMPLETIONSDIR/mkimg, with a symlink per other tool name, so that
# bash-completion's lazy loading finds it under any of them).
#
# The options are not listed here: they are read from the tool's own --help
# when TAB is pressed, so they stay true as options are added.  An option
# line of --help is one that starts with spaces and a dash; its option column
# ("-j, --json", "-t, --threads N", "--wait[=SECONDS]", "-h, --help / -V,
# --version") and a parenthesis of nothing but options ("(-h, --help; -V,
# --version)") give the options, and the placeholder after an option (SIZE,
# DIR, FMT, ...) says that it takes an argument and what to complete for it.
# The positional arguments come from the first "Usage:" line the same way
# (FILE, SIZE, MOUNTPOINT, ...), and so do the subcommands of imgsnap and
# imgctl ("imgctl [OPTIONS] grow|shrink IMAGE SIZE").  Hard-coded: what a
# placeholder completes, the values of a few arguments, and the commands of
# imgctl send (the control socket's, imgserve(1)).

# _libimg_help_opts TOOL: one line per option of TOOL --help:
# "OPTION<TAB>PLACEHOLDER" (the placeholder is empty when the option takes
# no argument; "[SECONDS]" when the argument is optional, --opt[=SECONDS]).
_libimg_help_opts()
{
    local line col w opt ph rest
    local -a cols words names
    while IFS= read -r line; do
        [[ $line =~ ^[[:space:]]+- ]] || continue
        # Columns are separated by two or more spaces; an option column
        # starts with a dash ("-h, --help      show this help;  -V, ...").
        line=${line//$'\t'/  }
        # "-q, --quiet  print nothing (-h, --help; -V, --version)": a
        # parenthesis holding nothing but options names more options
        rest=$line
        while [[ $rest =~ \(([^\(\)]*)\)(.*)$ ]]; do
            rest=${BASH_REMATCH[2]}
            read -ra words <<<"${BASH_REMATCH[1]//[,;]/ }"
            ph=${#words[@]}
            for w in "${words[@]}"; do
                [[ $w =~ ^--?[A-Za-z0-9][A-Za-z0-9-]*$ ]] || ph=0
            done
            ((ph)) && printf '%s\t\n' "${words[@]}"
        done
        cols=()
        while [[ $line =~ ^[[:space:]]*([^[:space:]]+([[:space:]][^[:space:]]+)*)(.*)$ ]]; do
            cols+=("${BASH_REMATCH[1]}")
            line=${BASH_REMATCH[3]}
        done
        for col in "${cols[@]}"; do
            [[ $col == -* ]] || continue
            read -ra words <<<"$col"
            names=() ph=
            for w in "${words[@]}" /; do
                w=${w%[,;]}
                if [[ $w =~ ^(--?[A-Za-z0-9][A-Za-z0-9-]*)(\[?=([^]]*)\]?)?$ ]]; then
                    names+=("${BASH_REMATCH[1]}")
                    if [ -n "${BASH_REMATCH[3]}" ]; then
                        ph=${BASH_REMATCH[3]}
                        [[ ${BASH_REMATCH[2]} == \[* ]] && ph="[$ph]"
                    fi
                    continue
                fi
                # "-t, --threads N": the placeholder is every name's
                [[ -z $ph && ${#names[@]} -gt 0 && $w =~ ^[A-Z][A-Z0-9_|]*$ ]] && ph=$w
                for opt in "${names[@]}"; do printf '%s\t%s\n' "$opt" "$ph"; done
                names=() ph=
                # "-h, --help / -V, --version": a slash starts another option
                [ "$w" = / ] || break
            done
        done
    done < <(LC_ALL=C "$1" --help 2>&1 </dev/null)
}

# _libimg_usage TOOL: the forms of TOOL's Usage lines (the "Usage:" line and
# the lines under it that start with the tool's name), one a line:
# "SUBCOMMAND<TAB>ARG ARG..." with the subcommand empty for a tool that has
# none.  Options ([OPTIONS], [--name NAME], --backing BASE) are left out,
# "[SIZE]" is SIZE; alternatives on one line ("create FILE | list FILE")
# and in one word ("grow|shrink IMAGE SIZE") are forms of their own.
_libimg_usage()
{
    local tool=${1##*/} line alt w sub skip
    local -a words alts args
    while IFS= read -r line; do
        line=${line#Usage:}
        read -ra words <<<"$line"
        [[ ${words[0]:-} == */"$tool" ]] && words[0]=$tool
        [[ ${words[0]:-} == "$tool" ]] || continue
        line=${words[*]:1}
        alts=()
        while [[ $line == *" | "* ]]; do
            alts+=("${line%% | *}")
            line=${line#* | }
        done
        alts+=("$line")
        for alt in "${alts[@]}"; do
            read -ra words <<<"$alt"
            args=() sub='' skip=0
            for w in "${words[@]}"; do
                if ((skip)); then
                    [[ $skip == 2 && $w != *"]" ]] && continue
                    skip=0
                    continue
                fi
                case $w in
                "[OPTIONS]" | "[OPTION]..." | "[OPTIONS]...") ;;
                \[-*\]) ;;
                \[-*) skip=2 ;;   # "[--name NAME]"
                -*) skip=1 ;;      # "--backing BASE"
                *)
                    if [[ ${#args[@]} -eq 0 && -z $sub && $w =~ ^[a-z][a-z|-]*$ ]]; then
                        sub=$w
                    else
                        w=${w#[}; w=${w%]}; w=${w%...}
                        args+=("$w")
                    fi ;;
                esac
            done
            # "grow|shrink IMAGE SIZE": one form per subcommand
            for w in ${sub//|/ }; do printf '%s\t%s\n' "$w" "${args[*]}"; done
            [ -n "$sub" ] || printf '\t%s\n' "${args[*]}"
        done
    done < <(LC_ALL=C "$1" --help 2>&1 </dev/null |
        sed -n -e '/^Usage:/{p;:u' -e 'n;/^[[:space:]]/p;/^[[:space:]]/bu' -e 'q;}')
}

# _libimg_files KIND: COMPREPLY for the current word $cur.
#   image  libimg images: *.img and snapshots (*.snapN), directories; all
#          files when nothing of that name matches
#   dir    directories
#   file   any file
#   target an image, a directory (mount point) or a device under /dev
_libimg_files()
{
    local -a r
    compopt -o filenames 2>/dev/null
    case $1 in
    dir)
        mapfile -t r < <(compgen -d -- "$cur") ;;
    file)
        mapfile -t r < <(compgen -f -- "$cur") ;;
    image | target)
        if [[ $1 == target && $cur == /dev/* ]]; then
            mapfile -t r < <(compgen -f -- "$cur")
        else
            mapfile -t r < <(compgen -d -- "$cur"
                compgen -f -X '!*.img' -- "$cur"
                compgen -f -X '!*.snap[0-9]*' -- "$cur")
            ((${#r[@]})) || mapfile -t r < <(compgen -f -- "$cur")
        fi ;;
    esac
    COMPREPLY=("${r[@]}")
}

# _libimg_complete_placeholder TOOL PLACEHOLDER [OPTION]: COMPREPLY for an
# argument named PLACEHOLDER in TOOL's --help.
_libimg_complete_placeholder()
{
    local tool=$1 ph=${2#[} opt=${3:-}
    ph=${ph%]}
    case $ph in
    *MOUNTPOINT* | *DEVICE*) [[ $ph == *\|* ]] && ph=TARGET ;;
    esac
    ph=${ph%%|*}
    case $opt in
    --fs)
        mapfile -t COMPREPLY < <(compgen -W "ext4 ext3 ext2 xfs btrfs" -- "$cur")
        return ;;
    -O | --output-format | -F | --source-format)
        mapfile -t COMPREPLY < <(compgen -W "raw libimg" -- "$cur")
        return ;;
    esac
    case $ph in
    FILE | BASE | NEWBASE) _libimg_files image ;;
    SRC | DST | EXPORT | PATH) _libimg_files file ;;
    DIR | MOUNTPOINT) _libimg_files dir ;;
    DEVICE | TARGET | IMAGE) _libimg_files target ;;
    FMT | FORMAT)
        mapfile -t COMPREPLY < <(compgen -W "raw libimg" -- "$cur") ;;
    TYPE | FS)
        mapfile -t COMPREPLY < <(compgen -W "ext4 ext3 ext2 xfs btrfs" -- "$cur") ;;
    *) COMPREPLY=() ;; # SIZE, DELTA, N, SECONDS, NAME, LABEL, OPTS, ...
    esac
}

_libimg()
{
    local cur prev words cword split=false
    if declare -F _init_completion >/dev/null 2>&1; then
        _init_completion -s || return
    else
        words=("${COMP_WORDS[@]}") cword=$COMP_CWORD
        cur=${words[cword]} prev=${words[cword - 1]:-}
    fi
    local tool=${words[0]} name=${words[0]##*/}
    # shellcheck disable=SC2088 # a literal "~/" typed on the command line
    [[ $tool == "~/"* ]] && tool=$HOME/${tool#"~/"}
    COMPREPLY=()

    local -A takes=()
    local o a
    while IFS=$'\t' read -r o a; do
        takes[$o]=$a
    done < <(_libimg_help_opts "$tool")

    # The argument of an option: "--opt=VALUE" (split by _init_completion)
    # or "--opt VALUE".
    if [[ $split == true || (-n $prev && -n ${takes[$prev]:-} && ${takes[$prev]} != \[*) ]]; then
        _libimg_complete_placeholder "$name" "${takes[$prev]:-}" "$prev"
        return
    fi
    if [[ $cur == -* ]]; then
        local -a opts=()
        for o in "${!takes[@]}"; do
            # --wait[=SECONDS]: also "--wait=" (a short option's optional
            # argument is written attached, -w5)
            case $o:${takes[$o]} in
            --*:\[*) opts+=("$o" "$o=") ;;
            *) opts+=("$o") ;;
            esac
        done
        mapfile -t COMPREPLY < <(compgen -W "${opts[*]}" -- "$cur" | LC_ALL=C sort -u)
        [[ ${COMPREPLY[0]:-} == *= ]] && compopt -o nospace 2>/dev/null
        return
    fi

    # The positional arguments before the current word.
    local -a pos=()
    local i w endopts=false
    for ((i = 1; i < cword; i++)); do
        w=${words[i]}
        if ! $endopts && [[ $w == -- ]]; then endopts=true; continue; fi
        if ! $endopts && [[ $w == -?* ]]; then
            [[ $w != *=* && -n ${takes[$w]:-} && ${takes[$w]} != \[* ]] && ((i++))
            continue
        fi
        pos+=("$w")
    done
    local n=${#pos[@]}

    local -a forms subs ph
    local f
    mapfile -t forms < <(_libimg_usage "$tool")
    for f in "${forms[@]}"; do
        [ -n "${f%%$'\t'*}" ] && subs+=("${f%%$'\t'*}")
    done
    if ((${#subs[@]})); then
        # imgsnap create|list|..., imgctl list|status|send|...
        if ((n == 0)); then
            mapfile -t COMPREPLY < <(compgen -W "${subs[*]}" -- "$cur")
            return
        fi
        for f in "${forms[@]}"; do
            [[ ${f%%$'\t'*} == "${pos[0]}" ]] || continue
            read -ra ph <<<"${f#*$'\t'}"
            break
        done
        ((n--))
        pos=("${pos[@]:1}")
    else
        read -ra ph <<<"${forms[0]#*$'\t'}"
    fi
    if [[ $name == imgctl && ${ph[1]:-} == COMMAND ]] && ((n >= 1)); then
        # imgctl send IMAGE COMMAND [ARGS...]: the control socket's commands
        # (imgserve(1)) and their words
        case $n:${pos[1]:-} in
        1:*) mapfile -t COMPREPLY < <(compgen -W "status grow shrink compact snapshot merge qos events low-water resume on-nospace stop" -- "$cur") ;;
        3:shrink) mapfile -t COMPREPLY < <(compgen -W "discard-data" -- "$cur") ;;
        2:compact) mapfile -t COMPREPLY < <(compgen -W "no-zero-detect" -- "$cur") ;;
        esac
        return
    fi
    if ((n < ${#ph[@]})); then
        if [[ ${ph[n]} =~ ^[a-z][a-z-]*$ ]]; then
            # a word to type as it is ("grow IMAGE SIZE [discard-data]")
            mapfile -t COMPREPLY < <(compgen -W "${ph[n]}" -- "$cur")
        else
            _libimg_complete_placeholder "$name" "${ph[n]}"
        fi
    fi
}

complete -F _libimg mkimg growimg shrinkimg compact imginfo imgmap imgcheck \
    imgconvert imgsnap imgserve imgattach imgdetach imgmount imgumount imgctl
