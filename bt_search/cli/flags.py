"""Library messages in the CLI's words: each `parameter` a message names becomes the flag that sets it.

The library names what its callers passed (`threshold`, `device=cuda`); a command-line user typed flags. The
CLI reads the parameter -> flag names off its typer commands (app.py), so a new option needs no entry here;
the few spellings that are not a command's parameter (`rerank=False`) are listed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Iterable, Mapping

SPELLINGS = {"rerank=False": "--no-rerank", "null_separated=True": "-0"}
_NAMED = re.compile(r"`([A-Za-z_][A-Za-z_0-9]*)(?:=([^`\s]*))?`")
_COMMAND_HINT = re.compile(r"`bt-search ([a-z]+)([^`]*)`")


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


def with_picks(message: str, picks: Mapping[str, str], accepts: Mapping[str, Collection[str]]) -> str:
    """`message` with each suggested command (`bt-search COMMAND ...` in backticks) completed by the options
    that picked the user's index and model (`picks`: flag -> value as given on this command line) which
    COMMAND takes (`accepts`: command -> its flags) and the suggestion does not set already."""

    def completed(match: re.Match) -> str:
        command, rest = match.group(1), match.group(2)
        words = rest.split()
        extra = "".join(
            f" {flag} {shlex.quote(value)}"
            for flag, value in picks.items()
            if flag in accepts.get(command, ()) and flag not in words
        )
        return f"`bt-search {command}{rest}{extra}`"

    return _COMMAND_HINT.sub(completed, message)


def flag_names(params: Iterable[tuple[str | None, Iterable[str]]]) -> dict[str, str]:
    """Parameter name -> its first long flag, from (name, option spellings) pairs; the first command wins."""
    flags: dict[str, str] = {}
    for name, opts in params:
        long = [opt for opt in opts if opt.startswith("--")]
        if name and long:
            flags.setdefault(name, long[0])
    return flags
