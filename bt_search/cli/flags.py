"""Library messages in the CLI's words: each `parameter` a message names becomes the flag that sets it.

The library names what its callers passed (`threshold`, `device=cuda`); a command-line user typed flags. The
CLI reads the parameter -> flag names off its typer commands (app.py), so a new option needs no entry here;
the few spellings that are not a command's parameter (`rerank=False`) are listed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

SPELLINGS = {"rerank=False": "--no-rerank", "null_separated=True": "-0"}
_NAMED = re.compile(r"`([A-Za-z_][A-Za-z_0-9]*)(?:=([^`\s]*))?`")


def in_flags(message: str, flags: Mapping[str, str]) -> str:
    """`message` with each backticked parameter in `flags` (name -> flag) shown as its flag; `name=value` as
    the flag and the value. Anything else in backticks stays as it is."""

    def flag_for(match: re.Match) -> str:
        whole, name, value = match.group(0)[1:-1], match.group(1), match.group(2)
        if whole in SPELLINGS:
            return SPELLINGS[whole]
        if name not in flags:
            return match.group(0)
        return flags[name] if value is None else f"{flags[name]} {value}"

    return _NAMED.sub(flag_for, message)


def flag_names(params: Iterable[tuple[str | None, Iterable[str]]]) -> dict[str, str]:
    """Parameter name -> its first long flag, from (name, option spellings) pairs; the first command wins."""
    flags: dict[str, str] = {}
    for name, opts in params:
        long = [opt for opt in opts if opt.startswith("--")]
        if name and long:
            flags.setdefault(name, long[0])
    return flags
