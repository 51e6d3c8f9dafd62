"""A streaming checker for untrusted gzip'd tar archives, at the speed of ``zlib``.

``Gunzip`` inflates (and verifies the gzip CRC and length of) each member of a
gzip stream; ``TarChecker`` reads the tar headers of the inflated stream and
refuses, with ``ValueError``, anything that could act outside the destination:
absolute names, ``..``, devices and FIFOs, a name stored again as another type,
a member under a symbolic link, a hard link to anything but an earlier regular
file, a symbolic link that leads out (chains like ``a -> .``, ``p -> a/..`` are
resolved against the names seen so far; unsure means refused). File data is
skipped over in whole slices, never looked at byte by byte.

The checker never rewrites the stream: the archive's own bytes go to ``tar``,
but only up to ``cleared``, the offset before which every header has been
checked. It accepts only what GNU tar reads the same way (POSIX ustar/pax and
GNU headers, strict numbers and checksums); anything else is refused.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator

__all__ = ["Gunzip", "TarChecker"]

BLOCK = 512
#: Inflate at most this much per step: a small archive may expand to gigabytes.
_SLICE = 1024 * 1024
#: Extended headers (pax, GNU long names) larger than this are refused.
_MAX_META = 1024 * 1024
#: How many symbolic links one target's resolution may follow in all (Linux's MAXSYMLINKS):
#: a total, not a depth, so a chain that doubles at each link cannot make the check exponential.
_MAX_HOPS = 40
#: Longest member name or link target (Linux's PATH_MAX): bounds the work and memory per name.
_MAX_NAME = 4096
#: A pax record's keyword, exactly (GNU tar skips blanks around it; a lenient reading would
#: let a checker and tar see different keys).
_PAX_KEY = re.compile(rb"[A-Za-z0-9._]+")
_DECIMAL = re.compile(r"[0-9]+")
_ZERO_BLOCK = bytes(BLOCK)
_OCTAL = re.compile(rb" *([0-7]+)(?:[ \0]|$)")
_REGULAR, _DIR, _SYMLINK, _HARDLINK = b"0\x007", b"5", b"2", b"1"
_META = b"xgLK"
#: pax keys that change where or how much GNU tar writes; only these are interpreted.
_PAX_LAYOUT = {"path", "linkpath", "size"}


def _refuse(message: str) -> ValueError:
    # Names come from the archive: keep a refusal readable whatever their length.
    shown = message if len(message) <= 500 else message[:400] + f"… ({len(message)} characters)"
    return ValueError(f"refused archive: {shown}")


class Gunzip:
    """Inflates a (possibly multi-member) gzip stream, verifying each member's trailer."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(31)
        self.total_in = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The inflated bytes of ``data``, in slices of at most ``_SLICE`` bytes."""
        self.total_in += len(data)
        while data:
            if self._inflater.eof:  # another gzip member follows (cat a.gz b.gz)
                self._inflater = zlib.decompressobj(31)
            try:
                out = self._inflater.decompress(data, _SLICE)
            except zlib.error as exc:
                raise _refuse(f"corrupt gzip data after {self.total_in} bytes ({exc})") from exc
            data = self._inflater.unconsumed_tail or self._inflater.unused_data
            if out:
                yield out

    def finish(self) -> None:
        """``ValueError`` unless the stream ended with a complete, verified gzip trailer."""
        if not self._inflater.eof:
            raise _refuse("truncated: the gzip stream ends before its trailer (CRC and length)")


class _Names:
    """What the archive has created so far, to judge each new member against it."""

    def __init__(self) -> None:
        self.kinds: dict[str, bytes] = {}  # name -> _DIR, _SYMLINK, or b"f" (regular or hard link)
        self.links: dict[str, str] = {}
        self._referenced: set[str] = set()  # names a link resolution went through

    def add(self, kind: bytes, name: str, linkname: str) -> None:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if self.kinds.setdefault(prefix, _DIR) != _DIR:
                raise _refuse(f"member {name!r} would be written under {prefix!r}, which is not a folder")
        held = self.kinds.get(name)
        if kind == _SYMLINK:
            if held is not None or name in self._referenced:
                raise _refuse(f"member {name!r} turns an existing or already used name into a link")
            self._check_symlink(name, parts[:-1], linkname)
            self.links[name] = linkname
        elif kind == _HARDLINK:
            target = _normalize(linkname, f"hard link {name!r}")
            if target is None or self.kinds.get(target) != b"f":
                raise _refuse(f"hard link {name!r} -> {linkname!r} does not name an earlier regular file")
            kind = b"f"
        if held is not None and held != kind:
            raise _refuse(f"member {name!r} is stored again as another type")
        self.kinds[name] = kind

    def _check_symlink(self, name: str, folder: list[str], target: str) -> None:
        if len(target) > _MAX_NAME:
            raise _refuse(f"a link target longer than {_MAX_NAME} characters: {name!r}")
        if not target or target.startswith("/"):
            raise _refuse(f"symbolic link {name!r} -> {target!r} is absolute or empty")
        self._resolve(list(folder), target, [_MAX_HOPS], name)

    def _resolve(self, stack: list[str], target: str, budget: list[int], name: str) -> list[str]:
        for part in target.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    raise _refuse(f"symbolic link {name!r} leads outside the destination")
                stack.pop()
                continue
            stack.append(part)
            path = "/".join(stack)
            link = self.links.get(path)
            if link is None:
                self._referenced.add(path)
                continue
            budget[0] -= 1
            if budget[0] < 0:
                raise _refuse(f"symbolic link {name!r} goes through too many links")
            stack.pop()
            stack = self._resolve(stack, link, budget, name)
        return stack


def _normalize(raw: str, what: str) -> str | None:
    """``raw`` without ``.`` and empty parts; ``None`` for the root; refuses absolute and ``..``."""
    if len(raw) > _MAX_NAME:
        raise _refuse(f"a name longer than {_MAX_NAME} characters: {what}")
    if raw.startswith("/"):
        raise _refuse(f"{what} has an absolute path {raw!r}")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _refuse(f"{what} {raw!r} contains '..'")
    return "/".join(parts) if parts else None


def _number(field: bytes, what: str) -> int:
    if field[:1] == b"\x80":  # GNU base-256, for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    match = _OCTAL.match(field)
    if match is None:
        raise _refuse(f"{what} is not a valid number: {field!r}")
    return int(match.group(1), 8)


def _byte_sum(block: bytes) -> int:
    """The sum of a block's bytes, fast: Adler-32's low half is 1 + that sum, exact up to 256 bytes."""
    return sum((zlib.adler32(block[start : start + 256]) & 0xFFFF) - 1 for start in range(0, len(block), 256))


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes, what: str) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 20)
        if space <= pos or not data[pos:space].isdigit():
            raise _refuse(f"malformed {what}")
        end = pos + int(data[pos:space])
        record = data[space + 1 : end]
        if end > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise _refuse(f"malformed {what}")
        key, _, value = record[:-1].partition(b"=")
        if _PAX_KEY.fullmatch(key) is None:
            raise _refuse(f"malformed {what}: keyword {key!r}")
        text = value.decode("utf-8", "surrogateescape")
        if "\0" in text:
            raise _refuse(f"{what} has a NUL in {key!r}")
        records[key.decode("utf-8", "surrogateescape")] = text
        pos = end
    return records


class TarChecker:
    """Checks a tar stream fed in pieces; ``cleared`` is how far it may be passed on."""

    def __init__(self, *, max_bytes: int, max_members: int) -> None:
        self.offset = 0
        self.members = 0
        self.ended = False
        #: Some member's mode lacks owner read/write (folders: and search) or has set-id/sticky bits.
        self.needs_mode_fix = False
        self.symlinks: list[str] = []
        self._max_bytes = max_bytes
        self._max_members = max_members
        self._names = _Names()
        self._skip = 0
        self._head = bytearray()
        self._need = BLOCK
        self._meta: tuple[bytes, int] | None = None  # an extended header whose data is being read
        self._pending: dict[str, str] = {}
        self._zeros = 0
        self._group_start: int | None = None
        self._end = 0

    @property
    def cleared(self) -> int:
        """Every header before this offset has been checked (and the end marker ends it)."""
        if self.ended:
            return self._end
        return self.offset if self._group_start is None else self._group_start

    def feed(self, data: bytes) -> None:
        size = len(data)
        if self.offset + size > self._max_bytes:
            raise _refuse(f"expands to more than max_bytes={self._max_bytes}")
        pos = 0
        while pos < size and not self.ended:
            if self._skip:
                step = min(self._skip, size - pos)
                self._skip -= step
                pos += step
                continue
            if not self._head:
                if self._group_start is None:
                    self._group_start = self.offset + pos
                if self._need == BLOCK and pos + BLOCK <= size:  # a whole header at hand: no copy
                    pos += BLOCK
                    self._take(bytes(data[pos - BLOCK : pos]))
                    continue
            step = min(self._need - len(self._head), size - pos)
            self._head += data[pos : pos + step]
            pos += step
            if len(self._head) == self._need:
                block = bytes(self._head)
                self._head.clear()
                self._take(block)
        if self.ended and not self._end:
            self._end = self.offset + pos
        self.offset += size

    def finish(self) -> None:
        """``ValueError`` unless the tar end marker (two zero blocks) was seen."""
        if not self.ended:
            raise _refuse("truncated: the tar stream ends before its end marker")

    def _take(self, block: bytes) -> None:
        self._need = BLOCK
        if self._meta is not None:
            kind, size = self._meta
            self._meta = None
            self._take_meta(kind, block[:size])
        elif block == _ZERO_BLOCK:
            if self._pending:
                raise _refuse("an extended header is followed by the end marker")
            self._zeros += 1
            self.ended = self._zeros == 2
        elif self._zeros:
            raise _refuse("a lone zero block in the middle of the archive")
        else:
            self._take_header(block)

    def _take_header(self, block: bytes) -> None:
        checksum = _number(block[148:156], "header checksum")
        unsigned = _byte_sum(block[:148] + b"        " + block[156:])
        if checksum != unsigned:  # some old tars summed signed chars; GNU tar accepts both
            high = sum(1 for byte in block[:148] + block[156:] if byte > 127)
            if checksum != unsigned - 256 * high:
                raise _refuse(f"bad header checksum at offset {self.offset}")
        magic = block[257:265]
        if magic not in (b"ustar\x0000", b"ustar  \x00"):
            raise _refuse(f"unsupported tar header format {magic!r} (POSIX or GNU tar expected)")
        kind = block[156:157]
        size = _number(block[124:136], "member size")
        if kind in _META:
            if size > _MAX_META:
                raise _refuse(f"extended header of {size} bytes")
            if kind != b"g" and kind.decode() in self._pending:
                raise _refuse("two extended headers of one kind for one member")
            self._meta = (kind, size)
            self._need = BLOCK * -(-size // BLOCK) if size else BLOCK
            if not size:
                self._meta = None
                self._take_meta(kind, b"")
            return
        name = _text(block[:100])
        if magic == b"ustar\x0000" and block[345]:
            name = _text(block[345:500]) + "/" + name
        self._take_member(kind, block, name, size)

    def _take_meta(self, kind: bytes, data: bytes) -> None:
        if kind in b"LK":
            self._pending[kind.decode()] = _text(data)
            return
        records = _pax_records(data, "pax header")
        if any(key.startswith("GNU.") for key in records):
            raise _refuse("GNU-specific pax keys (sparse files, volumes) are not supported")
        if kind == b"g":
            if _PAX_LAYOUT & records.keys():
                raise _refuse("a global pax header sets a name or size")
            return
        self._pending["x"] = ""
        for key in _PAX_LAYOUT & records.keys():
            self._pending["x" + key] = records[key]

    def _take_member(self, kind: bytes, block: bytes, name: str, size: int) -> None:
        pending, self._pending = self._pending, {}
        if ("L" in pending and "xpath" in pending) or ("K" in pending and "xlinkpath" in pending):
            raise _refuse(f"member {name!r} has two long names")
        name = pending.get("xpath", pending.get("L", name))
        linkname = pending.get("xlinkpath", pending.get("K", _text(block[157:257])))
        if "xsize" in pending:
            if _DECIMAL.fullmatch(pending["xsize"]) is None:
                raise _refuse(f"member {name!r} has a malformed pax size")
            size = int(pending["xsize"])
        self.members += 1
        if self.members > self._max_members:
            raise _refuse(f"more than max_members={self._max_members} members")
        self._check_member(kind, name, linkname, size, _number(block[100:108], "mode"))
        self._group_start = None
        self._skip = BLOCK * -(-size // BLOCK)

    def _check_member(self, kind: bytes, raw: str, linkname: str, size: int, mode: int) -> None:
        what = f"member {raw!r}"
        if kind not in _REGULAR + _DIR + _SYMLINK + _HARDLINK or not kind:
            detail = {b"3": "a device", b"4": "a device", b"6": "a FIFO"}.get(kind, f"of type {kind!r}")
            raise _refuse(f"{what} is {detail}")
        if kind not in _REGULAR and size:
            raise _refuse(f"{what} is not a regular file but has {size} bytes of data")
        name = _normalize(raw, what)
        if name is None:
            if kind != _DIR:
                raise _refuse(f"{what} names the destination itself but is not a folder")
            self.needs_mode_fix |= bool(mode & 0o7000) or mode & 0o700 != 0o700
            return
        if kind in _REGULAR:
            if raw.endswith("/"):
                raise _refuse(f"{what} is a regular file with a folder's name")
            kind = b"f"
            self.needs_mode_fix |= bool(mode & 0o7000) or mode & 0o600 != 0o600
        elif kind == _DIR:
            self.needs_mode_fix |= bool(mode & 0o7000) or mode & 0o700 != 0o700
        elif kind == _SYMLINK:
            self.symlinks.append(name)
        self._names.add(kind, name, linkname)
