"""The package's layout holds: imports run from higher stages to lower ones only, no module imports itself
back through others, the public API is what `help(bt_search)` shows, and the light paths stay light."""

from __future__ import annotations

import ast
import pydoc
import subprocess
import sys

import bt_search
from tests.support.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "bt_search"
# Lower ranks are imported by higher ones, never the other way round (docs/architecture.md).
RANKS = {
    "bt_search": 0,  # the package's face: __version__ and the lazily loaded public names
    "errors": 0,
    "config": 1,
    "media": 2,
    "engine": 3,
    "store": 3,
    "search": 4,
    "indexing": 4,
    "output": 5,
    "distributed": 5,
    "watch": 5,  # follows folders and runs indexing batches; serve starts it
    "serve": 6,
    "cli": 7,
    "__main__": 8,
}


def module_imports() -> dict[str, set[str]]:
    """Module -> the bt_search modules it imports anywhere in its body (function-level imports included)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("bt_search"):
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    is_module = (REPO_ROOT / (child.replace(".", "/") + ".py")).exists()
                    targets.add(child if is_module else node.module)
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.startswith("bt_search")}
        graph[module] = targets
    return graph


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_module_sits_in_a_stage_and_imports_only_lower_stages():
    graph = module_imports()
    assert {stage(module) for module in graph} <= set(RANKS), "a module outside the stages of RANKS"
    upward = [
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if stage(module) != stage(target) and RANKS[stage(target)] >= RANKS[stage(module)]
    ]
    assert not upward


def test_no_import_cycle():
    graph = module_imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph.get(module, ()):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target in graph and not state.get(target):
                visit(target, [*path, target])
        state[module] = 2

    for module in graph:
        if not state.get(module):
            visit(module, [module])
    assert not cycles


def test_the_public_api_is_declared_once_and_shown_by_help():
    assert "open_searcher" in bt_search.__all__ and "Searcher" in bt_search.__all__
    for name in bt_search.__all__:
        assert getattr(bt_search, name) is not None, name
    shown = pydoc.render_doc(bt_search, renderer=pydoc.plaintext)
    for name in ("open_searcher", "Searcher", "Hit", "index_paths", "IndexReader", "IndexWriter", "load_engine"):
        assert name in shown


def test_light_paths_import_no_heavy_modules():
    """`import bt_search` and the decode workers' modules load no torch, transformers or pyarrow."""
    code = (
        "import sys, bt_search, bt_search.media.decoding\n"
        "print(sorted(m for m in ('torch', 'transformers', 'pyarrow', 'typer', 'rich') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
