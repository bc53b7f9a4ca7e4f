"""README's commands are the ones CI runs."""

from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [lines[i + 1] for i, line in enumerate(lines) if line.strip() == "```sh" and "venv" in lines[i + 1]]


def readme_quickstart() -> tuple[str, str]:
    """The quickstart's query text, and the image README says it finds (repository-relative)."""
    import re

    text = (ROOT / "README.md").read_text()
    query = re.search(r'bt-search query "([^"]+)"', _readme_commands()[0]).group(1)
    expected = re.search(r"top hit should be `(sample_data/images/[^`]+)`", text).group(1)
    return query, expected


def test_ci_runs_readme_test_command_verbatim():
    setup_and_demo, setup_and_tests = _readme_commands()[:2]
    assert "pytest" in setup_and_tests and "bt-search index" in setup_and_demo
    assert setup_and_tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_cli_reference_is_current():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"])
    assert result.returncode == 0, "docs/cli.md is stale: run python scripts/gen_cli_docs.py"
