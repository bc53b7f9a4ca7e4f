"""`--from-list`: comments and blank lines are skipped, and an entry that does not exist is a failed row with its
reason while the rest is indexed, for either executor (issue 22 item 4)."""

from __future__ import annotations

from typer.testing import CliRunner

from bt_search.cli.app import app
from bt_search.distributed import list_sources, read_source_list
from bt_search.media.scan import ScanProblem
from bt_search.store import IndexReader
from tests.support.images import noise_image


def write_list(tmp_path) -> tuple[list[str], str]:
    """Two images, a list naming them among a comment, a blank line and a file that is gone; the gone path."""
    present = []
    for i in range(2):
        present.append(str(tmp_path / f"p{i}.png"))
        noise_image(i, 64, 64).save(present[-1])
    gone = str(tmp_path / "gone.png")
    lines = ["# photos to index", present[0], "", "   ", gone, "  # indented comment", present[1]]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return present, gone


def test_text_lists_skip_comments_and_blank_lines(tmp_path):
    present, gone = write_list(tmp_path)
    assert read_source_list(tmp_path / "list.txt") == [present[0], gone, present[1]]


def test_a_missing_entry_is_a_failed_row_and_the_rest_is_indexed(tiny_checkpoint, tmp_path):
    present, gone = write_list(tmp_path)
    index = str(tmp_path / "index")
    common = ["--index", index, "--model", str(tiny_checkpoint)]
    result = CliRunner().invoke(app, ["index", "--from-list", str(tmp_path / "list.txt"), *common, "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(IndexReader.open(index).paths) == present

    failed = CliRunner().invoke(app, ["failed", "--index", index, "-f", "tsv"])
    assert failed.exit_code == 0 and f"{gone}\tlisted, but does not exist\t" in failed.output


def test_ray_sources_turn_missing_entries_local_or_url_into_problems(tmp_path):
    present, gone = write_list(tmp_path)
    entries = [present[0], "file://" + gone, gone, "file://" + present[1]]
    records, problems = list_sources([], list_entries=entries)
    assert [r.path for r in records] == [present[0], "file://" + present[1]]
    assert sorted(problems, key=lambda p: p.path) == [
        ScanProblem(gone, "listed, but does not exist"),
        ScanProblem("file://" + gone, "listed, but does not exist"),
    ]
