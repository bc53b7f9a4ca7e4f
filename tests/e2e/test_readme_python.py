"""README's Python example runs exactly as written, against the default index a README user has built."""

from __future__ import annotations

import re
import shutil

import pytest

from bt_search import IndexIdentity, IndexWriter, index_paths, load_engine
from bt_search.config import default_index_dir
from tests.support.paths import REPO_ROOT

DEMO_MODEL = REPO_ROOT / "sample_data" / "demo-model"


def readme_python_example() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


@pytest.fixture
def default_index(tmp_path):
    """The default index (under the isolated home conftest sets), built from a few sample images."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for source in sorted((REPO_ROOT / "sample_data" / "images").glob("*.png"))[:12]:
        shutil.copy(source, photos / source.name)
    engine = load_engine(str(DEMO_MODEL), device="cpu")
    with IndexWriter.open(default_index_dir(), IndexIdentity.of(engine)) as writer:
        index_paths([photos], writer, engine, workers=0)
    return photos


def test_readme_python_example_runs_as_written(default_index, capsys):
    exec(compile(readme_python_example(), "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    ranks = [int(line.split()[0]) for line in lines]
    assert ranks == [1, 2, 3]
    assert all(line.split(maxsplit=2)[2].startswith(str(default_index)) for line in lines)
