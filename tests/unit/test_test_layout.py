"""The test suite's own layout: no test imports another test module or a conftest; shared helpers live in
tests/support/ and shared fixtures in a conftest.py (which pytest finds without an import)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

TESTS = REPO_ROOT / "tests"
# Code run by a child process (`python -c CODE`) is a string: its imports count too.
IMPORT_IN_CODE = re.compile(r"^\s*(?:from|import)\s+([\w.]+)", re.MULTILINE)


def forbidden(module: str) -> bool:
    """A test module (test_*) or a conftest, anywhere in a dotted name."""
    return any(part.startswith("test_") or part == "conftest" for part in module.split("."))


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]  # from pkg import test_x
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "import" in node.value:
            found += [(node.lineno, name) for name in IMPORT_IN_CODE.findall(node.value)]
    return found


def python_files() -> list[Path]:
    """Every Python file of the suite but this one, whose self-check below spells out forbidden imports."""
    return sorted(path for path in TESTS.rglob("*.py") if path != Path(__file__).resolve())


@pytest.mark.parametrize("path", python_files(), ids=lambda path: str(path.relative_to(TESTS)))
def test_no_test_imports_a_test_module_or_a_conftest(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [f"line {line}: {name}" for line, name in imported_modules(tree) if forbidden(name)]
    assert not bad, f"{path.relative_to(REPO_ROOT)} imports from a test module or conftest (move it to tests/support/)"


def test_the_check_catches_each_form_of_import():
    code = (
        "import tests.unit.test_a\n"
        "from tests.cli.test_b import helper\n"
        "from tests.conftest import noise_image\n"
        "from tests.e2e import test_c\n"
        "from .test_d import x\n"
        "CHILD = '''\\nfrom tests.unit.store.test_e import row\\n'''\n"
        "from tests.support.images import noise_image\n"
    )
    names = [name for _, name in imported_modules(ast.parse(code)) if forbidden(name)]
    assert names == [
        "tests.unit.test_a",
        "tests.cli.test_b",
        "tests.cli.test_b.helper",
        "tests.conftest",
        "tests.conftest.noise_image",
        "tests.e2e.test_c",
        ".test_d",
        ".test_d.x",
        "tests.unit.store.test_e",
    ]
