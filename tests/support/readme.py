"""README's shell commands, as the tests that hold CI and the demo to them read them."""

from __future__ import annotations

import re

from tests.support.paths import REPO_ROOT


def readme_commands() -> list[str]:
    """The one-line commands under README's ```sh fences that set up a venv, in order."""
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    return [lines[i + 1] for i, line in enumerate(lines) if line.strip() == "```sh" and "venv" in lines[i + 1]]


def readme_quickstart() -> tuple[str, str]:
    """The quickstart's query text, and the image README says it finds (repository-relative)."""
    text = (REPO_ROOT / "README.md").read_text()
    query = re.search(r'bt-search query "([^"]+)"', readme_commands()[0]).group(1)
    expected = re.search(r"top hit should be `(sample_data/images/[^`]+)`", text).group(1)
    return query, expected
