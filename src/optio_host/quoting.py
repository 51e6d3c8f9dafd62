"""POSIX shell quoting: the only way a string reaches a shell in optio-host.

Every path, argument and environment value is passed through ``quote``; no
caller splices raw text into a command line.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Mapping, Sequence

__all__ = [
    "NEWLINE_VAR",
    "env_assignments_line",
    "is_env_name",
    "join",
    "quote",
    "script_argv",
    "validate_argv",
    "validate_env",
    "validate_env_remove",
    "without_env",
]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What an env_remove pattern may hold: name characters and the glob syntax that fnmatch and a
# POSIX sh `case` read alike (no backslash or "^", which they read differently).
_ENV_PATTERN = re.compile(r"[A-Za-z0-9_*?\[\]!-]*")

#: Shell variable that the remote wrapper sets to a newline, so that
#: ``env_assignments_line`` can express values with newlines on one line.
NEWLINE_VAR = "_optio_nl"


def quote(value: str) -> str:
    """Quote one word for ``/bin/sh`` (single quotes; safe for any text without NUL)."""
    if "\0" in value:
        raise ValueError(f"a shell word cannot contain a NUL character: {value!r}")
    return shlex.quote(value)


def join(argv: Sequence[str]) -> str:
    """Quote and join an argv list into one shell command line."""
    return " ".join(quote(arg) for arg in argv)


def script_argv(script: str, *args: str) -> list[str]:
    """argv that runs a fixed ``script`` under ``/bin/sh`` with ``args`` as ``$1``, ``$2``...

    Values reach the script as positional parameters, never spliced into its text.
    """
    return ["/bin/sh", "-c", script, "sh", *args]


def validate_argv(argv: Sequence[str]) -> list[str]:
    """Check an argv sequence: a non-empty list of ``str`` without NUL characters."""
    if isinstance(argv, (bytes, bytearray)):
        raise TypeError("a command must be a str or a sequence of str, not bytes")
    args = list(argv)
    if not args:
        raise ValueError("an argv command must not be empty")
    for arg in args:
        if not isinstance(arg, str):
            raise TypeError(f"argv elements must be str, got {type(arg).__name__}: {arg!r}")
        if "\0" in arg:
            raise ValueError(f"argv elements cannot contain NUL characters: {arg!r}")
    return args


def is_env_name(name: object) -> bool:
    """Whether ``name`` can be an environment variable's name (``[A-Za-z_][A-Za-z0-9_]*``)."""
    return isinstance(name, str) and _ENV_NAME.fullmatch(name) is not None


def validate_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """Check environment names (``[A-Za-z_][A-Za-z0-9_]*``) and values (``str``, no NUL)."""
    if env is None:
        return {}
    checked: dict[str, str] = {}
    for name, value in env.items():
        if not is_env_name(name):
            raise ValueError(
                f"invalid environment variable name {name!r}: names must match [A-Za-z_][A-Za-z0-9_]*"
            )
        if not isinstance(value, str):
            raise TypeError(f"environment value for {name} must be str, got {type(value).__name__}")
        if "\0" in value:
            # The value itself may be a secret: name the variable, never the value.
            raise ValueError(f"environment value for {name} contains a NUL character")
        checked[name] = value
    return checked


def env_assignments_line(env: Mapping[str, str]) -> str:
    """One line of shell that exports ``env`` when ``eval``'d.

    Newlines inside values are written as ``$_optio_nl`` so the whole
    assignment list fits on a single line that ``read -r`` can take from stdin
    (this keeps secret values off every command line).
    """
    newline = f'"${NEWLINE_VAR}"'
    parts = []
    for name, value in validate_env(env).items():
        pieces = [quote(piece) for piece in value.split("\n")]
        parts.append(f"{name}={newline.join(pieces)}")
    return "export " + " ".join(parts) if parts else ":"


def validate_env_remove(patterns: Sequence[str] | None) -> list[str]:
    """Check ``env_remove``: ``fnmatch`` patterns of variable names (``*``, ``?``, ``[...]``)."""
    if patterns is None:
        return []
    if isinstance(patterns, (str, bytes)):
        # A bare string is a sequence of one-letter patterns, and "*" among them removes everything.
        raise TypeError(f"env_remove must be a list of patterns, not a single string: [{patterns!r}]")
    checked = list(patterns)
    for pattern in checked:
        if not isinstance(pattern, str):
            raise TypeError(f"env_remove patterns must be str, got {type(pattern).__name__}: {pattern!r}")
        if not _ENV_PATTERN.fullmatch(pattern):
            raise ValueError(
                f"invalid env_remove pattern {pattern!r}: use name characters [A-Za-z0-9_] and the "
                "wildcards * ? [...] [!...] only"
            )
    return checked


def without_env(environ: Mapping[str, str], patterns: Sequence[str]) -> dict[str, str]:
    """``environ`` minus every variable whose name matches one of ``patterns`` (case-sensitive)."""
    return {
        name: value
        for name, value in environ.items()
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    }
