"""The library names parameters; the CLI shows each as the flag that sets it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from bt_search.cli.app import _flags
from bt_search.cli.flags import in_flags
from tests.support.paths import REPO_ROOT

FLAG = re.compile(r"(?<![\w`/-])--?[a-z][a-z-]*")
COMMAND_HINT = re.compile(r"`bt-search [^`]*`")  # a whole command to run may spell its flags


def test_parameters_become_the_flags_of_the_commands_that_take_them():
    flags = _flags()
    assert (
        in_flags("`threshold` must be a finite number, not nan", flags)
        == "--threshold must be a finite number, not nan"
    )
    assert in_flags("`fmt` must be text or json", flags) == "--format must be text or json"
    assert in_flags("use `device=cpu`; `rerank_budget=SECONDS` caps it", flags) == (
        "use --device cpu; --rerank-budget SECONDS caps it"
    )
    assert in_flags("set `rerank=False` or `null_separated=True`", flags) == "set --no-rerank or -0"
    assert in_flags("`likes`/`unlikes` and `idle_timeout`", flags) == "--like/--unlike and --idle-timeout"
    # Anything else in backticks is left alone: commands, and words no command takes.
    untouched = "run `bt-search index PATH --index x`, see `terms.py` and `nonsense`"
    assert in_flags(untouched, flags) == untouched


def library_messages():
    """(file, line, text) of every string literal raised or noted below cli/ (f-string parts joined)."""
    for path in (REPO_ROOT / "bt_search").rglob("*.py"):
        if path.parent.name == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                texts = [
                    part.value
                    for part in ast.walk(node.exc)
                    if isinstance(part, ast.Constant) and isinstance(part.value, str)
                ]
                yield path.relative_to(REPO_ROOT), node.lineno, "".join(texts)


def test_no_library_error_names_a_command_line_flag():
    offenders = [
        f"{path}:{line}: {text}" for path, line, text in library_messages() if FLAG.search(COMMAND_HINT.sub("", text))
    ]
    assert not offenders


def test_the_cli_prints_a_library_error_with_its_flags(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bt_search", "serve", "--index", str(tmp_path), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--host 0.0.0.0 is reachable from other machines; add --allow-remote and --token" in result.stderr
