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
