"""The shell snippets a ``RemoteHost`` runs on its host (POSIX sh; GNU find/tar for archives).

Each takes its inputs as positional arguments (``$1``...), passed as quoted
words: no value is ever spliced into a script.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from optio_host.quoting import env_assignments_line, join

__all__ = [
    "ARCHIVE",
    "GET",
    "GET_CHECKED",
    "KILL_GROUP",
    "KILL_ORPHANS",
    "LINKS_OUT",
    "PRIVATE_DIRS",
    "PUT",
    "PUT_LANE",
    "REMOVE_FORCIBLY",
    "RESTORE",
    "RESTORE_COMMIT",
    "SHA256",
    "TAIL",
    "WRAPPER",
    "command_line",
    "env_line",
]

# The one way a remote command starts. Arguments: $1 env-on-stdin flag (the line is env_line's),
# $2 cwd, $3 "sh"|"argv", $4 merge flag, then the command. It runs in /bin/sh: sent as
# `exec /bin/sh -c WRAPPER ...`, or, once the header has told us the login shell *is* /bin/sh,
# sent to it directly (one exec fewer, which is most of the cost of a short command). String
# commands are eval'd by that same /bin/sh, which is what `/bin/sh -c` would do, without
# starting another shell.
# A command that cannot start is reported as `OPTIO:<code>` (codes: optio_host.errors.NOT_STARTED)
# instead of the pid line.
WRAPPER = r"""_optio_nl='
'
_optio_unset() {
  for _optio_n in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p'); do
    case $_optio_n in _optio_*) continue ;; esac
    for _optio_p do case $_optio_n in $_optio_p) unset "$_optio_n"; break ;; esac; done
  done
}
if [ "$1" = 1 ]; then IFS= read -r _optio_env || exit 125; eval "$_optio_env"; unset _optio_env; fi
cd -- "$2" 2>/dev/null || {
  if [ ! -e "$2" ]; then printf 'OPTIO:ECWD\n'
  elif [ ! -d "$2" ]; then printf 'OPTIO:ECWDNOTDIR\n'
  else printf 'OPTIO:ECWDACCES\n'; fi
  exit 126; }
_optio_mode=$3; _optio_merge=$4; shift 4
if [ "$_optio_mode" = argv ]; then
  case $1 in
    */*) if [ ! -e "$1" ]; then printf 'OPTIO:ENOENT\n'; exit 127; fi
         if [ -d "$1" ] || [ ! -x "$1" ]; then printf 'OPTIO:EACCES\n'; exit 126; fi ;;
    *) command -v -- "$1" >/dev/null 2>&1 || { printf 'OPTIO:ENOENT\n'; exit 127; } ;;
  esac
fi
_optio_sh=0
case "${SHELL##*/}" in sh|dash) if [ "$SHELL" -ef /bin/sh ]; then _optio_sh=1; fi ;; esac
printf 'OPTIO:%s:%s\n' "$$" "$_optio_sh"
if [ "$_optio_merge" = 1 ]; then exec 2>&1; fi
if [ "$_optio_mode" = argv ]; then exec "$@"; fi
_optio_cmd=$1
shift
unset _optio_nl _optio_mode _optio_merge _optio_sh _optio_n _optio_p; unset -f _optio_unset
eval "unset _optio_cmd; $_optio_cmd"
"""


def env_line(env: Mapping[str, str], remove: Sequence[str]) -> str:
    """The line the wrapper reads and evals: unset inherited names matching ``remove``, then export ``env``.

    Patterns and values arrive as quoted words; ``case`` in sh matches the patterns as fnmatch does.
    (A value spanning lines may make ``env`` list a name that does not exist: unsetting it is harmless.)
    """
    unset = f"_optio_unset {join(remove)}; " if remove else ""
    return unset + env_assignments_line(env)


def command_line(wrapper_args: list[str], login_shell_is_sh: bool) -> str:
    if login_shell_is_sh:
        return f"set -- {join(wrapper_args)}\n{WRAPPER}"
    return join(["exec", "/bin/sh", "-c", WRAPPER, "/bin/sh", *wrapper_args])


# Follows $1 from byte $2 (1-based) like tail -F; ends when the channel's stdin closes. Only a
# regular file is followed: a symlink (say, to /dev/zero or an outside file), FIFO, device or folder
# at $1 is refused, at the start and whenever it replaces the file later, with exit 3 and
# "optio-untailable:<code>" on stderr (codes: host/_tailing.py). GNU tail itself already ignores a
# symlink that replaces the file (with inotify); the check loop catches the rest within _optio_beat.
TAIL = r"""_optio_kind() {
  if [ -L "$1" ]; then _optio_bad=link
  elif [ -p "$1" ]; then _optio_bad=fifo
  elif [ -d "$1" ]; then _optio_bad=directory
  elif [ -c "$1" ]; then _optio_bad=char
  elif [ -b "$1" ]; then _optio_bad=block
  elif [ -S "$1" ]; then _optio_bad=socket
  elif [ -e "$1" ] && [ ! -f "$1" ]; then _optio_bad=other
  else _optio_bad=; fi
}
_optio_refuse() { printf 'optio-untailable:%s\n' "$_optio_bad" >&2; exit 3; }
_optio_beat=0.5
_optio_kind "$1"
[ -z "$_optio_bad" ] || _optio_refuse
tail -c "+$2" -F -s 0.1 -- "$1" 2>/dev/null &
_optio_tail=$!
exec 3<&0
{ cat <&3 >/dev/null; kill "$_optio_tail"; } 2>/dev/null &
_optio_eof=$!
exec 3<&-
while kill -0 "$_optio_tail" 2>/dev/null; do
  _optio_kind "$1"
  if [ -n "$_optio_bad" ]; then
    kill "$_optio_tail" "$_optio_eof" 2>/dev/null
    _optio_refuse
  fi
  sleep "$_optio_beat"
done
_optio_kind "$1"  # tail may have given up on what replaced the file (it cannot seek a FIFO)
[ -z "$_optio_bad" ] || _optio_refuse
"""

# Upload into $2, a new temporary file in $1 (noclobber: it must not exist), with mode $3
# (octal, optional) set before any data arrives; the caller renames it once verified. Plain `cat`
# keeps the pipe moving: `head -c` (8 KiB reads) cost a third of the throughput.
PUT = r"""folder=$1 temp=$2 mode=$3
mkdir -p -- "$folder" || exit 1
set -C
: > "$temp" || exit 1
if [ -n "$mode" ]; then chmod "$mode" -- "$temp" || exit 1; fi
exec cat >> "$temp"
"""

# One lane of a striped upload (``_striped``) into the file $1, which PUT created: frames on
# stdin, each a line "<offset> <length>" and then that many bytes, written at that offset (offsets
# are multiples of 64 KiB), then acknowledged with "ok <offset> <length>" once on the file. `head
# -c` reads exactly the frame's bytes, never the next header (a header that is not two numbers,
# the length above 0, means the lane is out of step: it stops); dd's own report is kept only to
# explain a failure (a full disk, say).
PUT_LANE = r"""while read -r off len; do
  case $off:$len in *[!0-9:]* | :* | *: | *:0) echo "bad frame header"; exit 1 ;; esac
  out=$(head -c "$len" | dd of="$1" bs=65536 seek=$((off / 65536)) conv=notrunc 2>&1) || {
    printf '%s\n' "$out"; exit 1; }
  echo "ok $off $len"
done
"""

# Stream $1: a first line with its size (or "missing", "directory", "special"), then its bytes.
# A FIFO or device is refused before it is opened (opening a FIFO waits for a writer). (The size
# comes from a second open: wc -c on the shared descriptor would seek it to the end.) At most one
# byte past that size is sent: a file growing meanwhile is refused by the client (sized_chunks)
# without streaming what was appended.
GET = r"""if [ ! -e "$1" ]; then echo missing; exit 3; fi
if [ -d "$1" ]; then echo directory; exit 4; fi
if [ ! -f "$1" ]; then echo special; exit 4; fi
exec 3< "$1" || exit 5
set -- $(wc -c < "$1")
echo "$1"
exec head -c $(($1 + 1)) <&3
"""

# GET, but the bytes are those of the file checked: open $1 first, then verify what was opened
# (through /proc/$$/fd/3, which names the opened file itself, not whatever the name leads to
# now): a regular file whose real path is under $2 (a real path). Refusals: "special", or
# "outside <real path>". Without /proc the name is resolved instead (a swap can then slip by).
# A FIFO swapped in between the -f test and the open makes the open wait: the caller times out.
GET_CHECKED = r"""if [ ! -e "$1" ]; then echo missing; exit 3; fi
if [ -d "$1" ]; then echo directory; exit 4; fi
if [ ! -f "$1" ]; then echo special; exit 4; fi
exec 3< "$1" || exit 5
opened=/proc/$$/fd/3
if [ -e "$opened" ]; then real=$(readlink -- "$opened"); else opened=$1; real=$(readlink -f -- "$1"); fi
if [ ! -f "$opened" ]; then echo special; exit 4; fi
case $real in
  "$2"/*) ;;
  *) printf 'outside %s\n' "$real"; exit 6 ;;
esac
set -- $(wc -c < "$opened")
echo "$1"
exec head -c $(($1 + 1)) <&3
"""

SHA256 = r"""[ -f "$1" ] || exit 3
if command -v sha256sum >/dev/null 2>&1; then exec sha256sum -- "$1"; fi
if command -v shasum >/dev/null 2>&1; then exec shasum -a 256 -- "$1"; fi
exec openssl dgst -sha256 -r "$1"
"""

# Kill process group $1, started at least $2 seconds ago, after its connection was lost. A leader
# younger than that took over the id of one that ended: left alone. (Without a leader the group
# lives on in its other members, and its id cannot be reused meanwhile.)
KILL_GROUP = r"""if age=$(ps -o etimes= -p "$1" 2>/dev/null); then
  [ "${age##* }" -ge "$2" ] 2>/dev/null || exit 0
fi
kill -s KILL -- "-$1" 2>/dev/null
exit 0
"""

# KILL what is left of process group $1 (children started in the background) once its leader has
# exited and been reaped. While any member lives the group id stays taken, so no new process can
# have it as its pid: a process with that pid means the group emptied and the id was reused.
KILL_ORPHANS = r"""kill -0 "$1" 2>/dev/null && exit 0
kill -s KILL -- "-$1" 2>/dev/null
exit 0
"""

# Archive the contents of folder $1 (then: a find expression selecting what to prune) as a gzip'd
# tar on stdout: regular files, folders and symlinks only. pigz where there is one (it uses every
# core), else gzip. tar's own exit status goes to stderr ("optio-tar-exit:N"): a pipeline has none.
ARCHIVE = r"""cd -- "$1" || exit 2
shift
if [ "$#" -gt 0 ]; then
  set -- \( "$@" \) -prune -o
fi
if command -v pigz >/dev/null 2>&1; then _optio_gz=pigz; else _optio_gz=gzip; fi
{ find . -mindepth 1 "$@" \( -type f -o -type d -o -type l \) -printf '%P\0' |
    tar --null --no-recursion -T - -cf -
  echo "optio-tar-exit:$?" >&2; } | "$_optio_gz" -1
"""

# Unpack a checked gzip'd tar into the (new, empty) folder $1, with tar options $3...; the archive
# comes on stdin, or, when $2 names a file that striped lanes are filling, from that file: stdin
# then carries lines "<n>", each saying that the file's first n bytes are written (in order).
# The last line says how the inflater and tar ended: "optio-restore: z<status> t<status>". tar
# stops reading at the end marker: cat drains what follows, so gzip still checks its trailer.
RESTORE = r"""cd -- "$1" || exit 2
_optio_follow=$2
shift 2
if command -v pigz >/dev/null 2>&1; then _optio_gz=pigz; else _optio_gz=gzip; fi
_optio_inflate() {
  if [ -z "$_optio_follow" ]; then "$_optio_gz" -dc; return; fi
  pos=0
  while read -r upto; do
    tail -c "+$((pos + 1))" -- "$_optio_follow" | head -c "$((upto - pos))"
    pos=$upto
  done | "$_optio_gz" -dc
}
exec 3>&1
_optio_codes=$( { { _optio_inflate; echo "z$?" >&4; } |
  { tar -x -f - "$@" >&3 2>&3; echo "t$?" >&4; cat >/dev/null; }; } 4>&1 )
echo "optio-restore:" $_optio_codes
"""

# Second line of defence after unpacking into $1: print the first symbolic link anywhere under it
# whose full resolution (GNU realpath -m) leads outside it; print nothing when none does.
LINKS_OUT = r"""root=$(cd -P -- "$1" && pwd -P) || exit 1
find "$root" -type l -exec sh -c '
  root=$1; shift
  for l do
    t=$(realpath -m -- "$l") || { printf "%s\n" "$l"; exit 0; }
    case $t in "$root"|"$root"/*) ;; *) printf "%s\n" "$l"; exit 0 ;; esac
  done' sh "$root" {} + | head -n 1
"""

# Remove $@ even where an archive left folders without write or search permission for us.
REMOVE_FORCIBLY = r"""chmod -R u+rwX -- "$@" 2>/dev/null; rm -rf -- "$@"
"""

# Swap the unpacked folder $1 in for the workdir $2 (which moves aside to $3): two renames, undone
# if the second fails. The caller removes $3 afterwards.
RESTORE_COMMIT = r"""if [ -e "$2" ] || [ -L "$2" ]; then mv -T -- "$2" "$3" || exit 1; fi
mv -T -- "$1" "$2" || { mv -T -- "$3" "$2"; exit 1; }
"""

# Make taskdir $1 and workdir $2 (mode 0700) and check, after creating them, that no other user
# could swap them: neither is a link and both are ours; every folder above $1 (as found, and where
# a link there leads) belongs to us or root, and is writable by others only with the sticky bit
# (like /tmp). A refusal prints `OPTIO:<what>:<path>` (ELINK, EOWNER, EMODE) and exits 3.
PRIVATE_DIRS = r"""umask 077
mkdir -p -- "$2" || exit 1
me=$(id -u)
for d in "$1" "$2"; do
  if [ -L "$d" ]; then printf 'OPTIO:ELINK:%s\n' "$d"; exit 3; fi
  [ "$(stat -c %u -- "$d")" = "$me" ] || { printf 'OPTIO:EOWNER:%s\n' "$d"; exit 3; }
done
d=$1
while [ "$d" != / ]; do
  d=${d%/*}; [ -n "$d" ] || d=/
  for o in "$(stat -c %u -- "$d")" "$(stat -L -c %u -- "$d")"; do
    [ "$o" = 0 ] || [ "$o" = "$me" ] || { printf 'OPTIO:EOWNER:%s\n' "$d"; exit 3; }
  done
  m=$(stat -L -c %a -- "$d") || exit 1
  if [ $((0$m & 022)) -ne 0 ] && [ $((0$m & 01000)) -eq 0 ]; then printf 'OPTIO:EMODE:%s\n' "$d"; exit 3; fi
done
"""
