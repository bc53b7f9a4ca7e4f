"""What the CLI says about an index directory it cannot use (damaged, someone else's, a plain file, on a full
or read-only disk): one clear message, before any model loads, and never a deleted or suggested-deleted file."""

from __future__ import annotations

import errno
import os
import shutil

import pytest

from tests.support.cli import cli


def test_a_damaged_index_is_reported_before_any_model_loads(small_index, tmp_path):
    broken = tmp_path / "index"
    shutil.copytree(small_index[0], broken)
    for path in broken.rglob("*"):
        if path.is_file():
            path.write_bytes(b"\x00garbage")
    result = cli("index", small_index[1][0].parent, "--index", broken)  # no --model: the index's own
    assert result.exit_code == 1
    assert str(broken) in result.stderr and "loading model" not in result.stderr


def test_never_suggests_deleting_a_file_given_as_the_index(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("my notes\n")
    for args in (["query", "cats"], ["index", tmp_path]):
        result = cli(*args, "--index", afile)
        assert result.exit_code == 2, result.stderr
        assert "delete" not in result.stderr and "not an index directory" in result.stderr
    assert afile.read_text() == "my notes\n"


def test_a_folder_with_someone_elses_manifest_is_not_called_damaged(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "manifest.json").write_text('{"name": "my-web-app", "version": "1.0"}\n')
    result = cli("query", "cats", "--index", project)
    assert result.exit_code != 0 and "not a bt-search index" in result.stderr
    assert "delete" not in result.stderr and "rebuild" not in result.stderr
    assert (project / "manifest.json").exists()


def test_a_damaged_index_is_moved_aside_never_deleted(small_index, tmp_path):
    index_dir = tmp_path / "index"
    shutil.copytree(small_index[0], index_dir)
    (index_dir / "manifest.json").write_text("{ not json")
    result = cli("query", "cats", "--index", index_dir)
    assert result.exit_code != 0 and "move" in result.stderr and "aside" in result.stderr
    assert "delete" not in result.stderr


@pytest.mark.parametrize(("code", "says"), [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only")])
def test_disk_full_and_read_only_index_say_what_happened(
    code, says, small_index, tiny_checkpoint, tmp_path, monkeypatch
):
    def fail(src, dst, *args, **kwargs):  # every atomic write ends in a rename
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(os, "replace", fail)
    monkeypatch.setattr(os, "rename", fail)
    result = cli("index", small_index[1][0].parent, "--index", tmp_path / "index", "--model", tiny_checkpoint)
    assert result.exit_code == 1
    assert says in result.stderr and "internal error" not in result.stderr
