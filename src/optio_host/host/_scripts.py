"""The shell snippets a ``RemoteHost`` runs on its host (POSIX sh; GNU find/tar for archives).

Each takes its inputs as positional arguments (``$1``...), passed as quoted
words: no value is ever spliced into a script.
"""

from __future__ import annotations

from optio_host.quoting import join

__all__ = [
    "ARCHIVE",
    "GET",
    "KILL_GROUP",
    "PUT",
    "RESTORE_COMMIT",
    "SHA256",
    "TAIL",
    "WRAPPER",
    "command_line",
]

# The one way a remote command starts. Arguments: $1 env-on-stdin flag, $2 cwd, $3 "sh"|"argv",
# $4 merge flag, then the command. It runs in /bin/sh: sent as `exec /bin/sh -c WRAPPER ...`, or,
# once the header has told us the login shell *is* /bin/sh, sent to it directly (one exec fewer,
# which is most of the cost of a short command). String commands are eval'd by that same /bin/sh,
# which is what `/bin/sh -c` would do, without starting another shell.
WRAPPER = r"""_optio_nl='
'
if [ "$1" = 1 ]; then IFS= read -r _optio_env || exit 125; eval "$_optio_env"; unset _optio_env; fi
cd -- "$2" 2>/dev/null || { printf 'OPTIO:ECWD\n'; exit 126; }
_optio_mode=$3; _optio_merge=$4; shift 4
if [ "$_optio_mode" = argv ] && ! command -v -- "$1" >/dev/null 2>&1; then
  printf 'OPTIO:ENOENT\n'; exit 127
fi
_optio_sh=0
case "${SHELL##*/}" in sh|dash) if [ "$SHELL" -ef /bin/sh ]; then _optio_sh=1; fi ;; esac
printf 'OPTIO:%s:%s\n' "$$" "$_optio_sh"
if [ "$_optio_merge" = 1 ]; then exec 2>&1; fi
if [ "$_optio_mode" = argv ]; then exec "$@"; fi
_optio_cmd=$1
shift
unset _optio_nl _optio_mode _optio_merge _optio_sh
eval "unset _optio_cmd; $_optio_cmd"
"""


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

# Stream $1: a first line with its size (or "missing", "directory"), then its bytes. (The size
# comes from a second open: wc -c on the shared descriptor would seek it to the end.)
GET = r"""if [ ! -e "$1" ]; then echo missing; exit 3; fi
if [ -d "$1" ]; then echo directory; exit 4; fi
exec 3< "$1" || exit 5
set -- $(wc -c < "$1")
echo "$1"
exec cat <&3
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

ARCHIVE = r"""cd -- "$1" || exit 2
shift
if [ "$#" -gt 0 ]; then
  set -- \( "$@" \) -prune -o
fi
{ find . -mindepth 1 "$@" -printf '%P\0' | tar --null --no-recursion -T - -cf -
  echo "optio-tar-exit:$?" >&2; } | gzip -1
"""

RESTORE_COMMIT = r"""find "$2" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} + &&
find "$1" -mindepth 1 -maxdepth 1 -exec mv -- {} "$2"/ \; &&
rmdir -- "$1"
"""
