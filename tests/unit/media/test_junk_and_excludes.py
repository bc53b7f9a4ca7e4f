"""Junk files of phone and NAS libraries (hidden, ._*, @eaDir) and --exclude globs: neither images nor failures;
the rules persist in the manifest, and --prune keeps merely-excluded files unless --prune-excluded."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bt_search.cli.app import app
from bt_search.media.scan import FileRecord, ScanProblem, scan
from bt_search.media.scan_rules import ScanRules, resolved_rules
from bt_search.store import IndexReader
from tests.support.images import noise_image

JUNK = [
    ".hidden.png",
    "._IMG_0001.png",
    ".thumbnails/t1.png",
    "@eaDir/IMG_0002.png/SYNOFILE_THUMB_M.png",
    "a/node_modules/x.png",
]
GOOD = ["IMG_0001.png", "a/IMG_0002.png", "a/b/IMG_0003.png"]


def photo_tree(root):
    for i, name in enumerate(GOOD + JUNK):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.startswith("._") or "@eaDir" in name:
            path.write_bytes(b"\x00\x05\x16\x07 AppleDouble / NAS thumbnail, not a PNG")  # would fail to decode
        else:
            noise_image(i, 48, 40).save(path)
    return root


def found(items):
    return sorted(i.path for i in items if isinstance(i, FileRecord)), [i for i in items if isinstance(i, ScanProblem)]


def test_scan_skips_junk_by_default_and_applies_excludes(tmp_path):
    root = photo_tree(tmp_path)
    files, problems = found(list(scan([root], rules=ScanRules(exclude=("*/node_modules/*",)))))
    assert files == sorted(str(root / name) for name in GOOD) and problems == []
    everything, _ = found(list(scan([root], rules=ScanRules(include_hidden=True))))
    assert everything == sorted(str(root / name) for name in GOOD + JUNK)


def test_exclude_prunes_whole_folders_and_roots_are_taken_as_given(tmp_path):
    root = photo_tree(tmp_path)
    rules = ScanRules(exclude=("*/a/*",))
    assert rules.skips(str(root / "a"), "a", is_dir=True)  # the folder itself is never listed
    files, _ = found(list(scan([root], rules=rules)))
    assert files == [str(root / "IMG_0001.png")]
    hidden_root, _ = found(list(scan([root / ".thumbnails"])))  # a hidden folder named as a root is walked
    assert hidden_root == [str(root / ".thumbnails" / "t1.png")]


@pytest.mark.parametrize(
    "path, expected",
    [
        ("IMG.png", False),
        (".thumbnails/x.png", True),
        ("a/._x.png", True),
        ("@eaDir/x/y.png", True),
        ("a/node_modules/x.png", True),
    ],
)
def test_rules_cover_paths_below_their_roots(tmp_path, path, expected):
    rules = ScanRules(exclude=("*/node_modules/*",))
    assert rules.covers(str(tmp_path / path), [str(tmp_path)]) is expected
    assert not rules.covers(str(tmp_path / path), [str(tmp_path / "elsewhere")])


def test_recorded_rules_apply_unless_an_option_replaces_them():
    recorded = {"include_hidden": True, "exclude": ["*/x/*"]}
    assert resolved_rules(recorded) == ScanRules(True, ("*/x/*",))
    assert resolved_rules(recorded, include_hidden=False) == ScanRules(False, ("*/x/*",))
    assert resolved_rules(recorded, exclude=["*/y/*"]) == ScanRules(True, ("*/y/*",))
    assert resolved_rules(None) == ScanRules()


def _index(root, index, model, *options):
    result = CliRunner().invoke(app, ["index", str(root), "--index", str(index), "--model", str(model), "-q", *options])
    assert result.exit_code == 0, result.output
    reader = IndexReader.open(index)
    return sorted(reader.paths), sorted(f.path for f in reader.failed()), reader


def test_index_leaves_junk_out_records_rules_and_prune_keeps_excluded(tmp_path, tiny_checkpoint):
    root, index = photo_tree(tmp_path / "photos"), tmp_path / "index"
    good = sorted(str(root / name) for name in GOOD)
    images, failed, reader = _index(root, index, tiny_checkpoint, "--exclude", "*/node_modules/*")
    assert images == good and failed == []
    assert reader.manifest["settings"]["scan_rules"] == {"include_hidden": False, "exclude": ["*/node_modules/*"]}

    noise_image(99, 48, 40).save(root / "a" / "node_modules" / "new.png")  # a re-run applies the recorded rules
    images, failed, _ = _index(root, index, tiny_checkpoint)
    assert images == good and failed == []

    images, _, _ = _index(root, index, tiny_checkpoint, "--include-hidden", "--exclude", "*/nothing/*")
    assert str(root / ".hidden.png") in images and str(root / "a" / "node_modules" / "x.png") in images
    images, _, _ = _index(root, index, tiny_checkpoint, "--skip-hidden", "--prune")
    assert str(root / ".hidden.png") in images, "--prune must not drop files that are merely excluded"
    images, failed, _ = _index(
        root, index, tiny_checkpoint, "--prune", "--prune-excluded", "--exclude", "*/node_modules/*"
    )
    assert images == good and failed == []
