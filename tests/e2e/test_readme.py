"""README's commands are the ones CI runs."""

from tests.support.paths import REPO_ROOT
from tests.support.readme import readme_commands

ROOT = REPO_ROOT


def test_ci_runs_readme_test_command_verbatim():
    setup_and_demo, setup_and_tests = readme_commands()[:2]
    assert "pytest" in setup_and_tests and "bt-search index" in setup_and_demo
    assert setup_and_tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_cli_reference_is_current():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"])
    assert result.returncode == 0, "docs/cli.md is stale: run python scripts/gen_cli_docs.py"


def test_cli_guide_names_every_command_in_its_opening():
    import re

    import typer

    from bt_search.cli.app import app

    commands = sorted(typer.main.get_command(app).commands)
    opening = (ROOT / "docs" / "cli-guide.md").read_text().split("\n## ")[0]
    words = {1: "One", 2: "Two", 3: "Three", 4: "Four", 5: "Five", 6: "Six", 7: "Seven", 8: "Eight"}
    assert f"{words[len(commands)]} commands" in opening
    assert sorted(set(re.findall(r"`(\w+)`", opening)) & set(commands)) == commands


def test_readme_opens_files_portably():
    text = (ROOT / "README.md").read_text()
    assert "xdg-open" in text and "xargs -0 open" in text  # Linux and macOS
    assert "| xargs -0 open\n" not in text  # never macOS's alone
