"""`query` with a table on a terminal shows the cosine shortlist first, then the reranked order, and the screen
ends with exactly what the command prints when its output is not a terminal (tmux is the terminal here; the
view's frames are read from the pane's raw output)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from tests.support.cli import cli, cli_index
from tests.support.images import noise_image
from tests.support.paths import REPO_ROOT
from tests.support.serve import ServerProcess

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
QUERY = "two green triangles"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.mark.parametrize("served", [False, True], ids=["in-process", "served"])
def test_the_shortlist_shows_first_and_the_screen_ends_with_the_answer(tiny_checkpoint, tmp_path, monkeypatch, served):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(8):
        noise_image(1300 + i, 64, 64).save(photos / f"p{i}.png")
    cli_index([photos], tmp_path / "index", tiny_checkpoint, "--quiet")
    args = [QUERY, "--index", tmp_path / "index", "--format", "table", "--shortlist", "8", "--batch-size", "2"]
    cosine = cli("query", *args[:3], "-f", "jsonl", "--no-rerank", "--top-k", "8", "--no-server").stdout
    cosine_names = [os.path.basename(json.loads(line)["path"]) for line in cosine.splitlines()]
    monkeypatch.chdir(REPO_ROOT)  # paths are shown relative to the current folder: the same in both runs
    monkeypatch.setenv("COLUMNS", "100")  # the terminal's width, for the run whose output is not a terminal
    expected = cli("query", *args, "--no-server").stdout.rstrip("\n").splitlines()
    monkeypatch.delenv("COLUMNS")
    command = " ".join(shlex.quote(str(a)) for a in [sys.executable, "-m", "bt_search", "query", *args])
    environment, flag, server = "", "--no-server", None
    if served:  # answered by a server (reranking 2 at a time), with torch unloadable here: it must be
        runtime = tmp_path / "run"
        runtime.mkdir(mode=0o700)
        server = ServerProcess(tmp_path / "index", runtime, "--batch-size", "2")
        poison = tmp_path / "poison" / "torch"
        poison.mkdir(parents=True)
        (poison / "__init__.py").write_text("raise ImportError('torch imported by a served query')\n")
        environment = f"export XDG_RUNTIME_DIR={shlex.quote(str(runtime))} PYTHONPATH={poison.parent}\n"
        flag = "--verbose"  # says which path answered
    script = tmp_path / "run.sh"
    script.write_text(
        f"cd {shlex.quote(str(REPO_ROOT))}\n{environment}clear\n{command} {flag}\necho DONE-MARK\n"
        f"touch {tmp_path}/done\n"
    )
    tmux = ["tmux", "-L", f"bt-live-{os.getpid()}", "-f", "/dev/null"]
    env = dict(os.environ, BT_SEARCH_WORKERS="1", PYTHONUNBUFFERED="1", TERM="xterm-256color")
    env.pop("TMUX", None)
    subprocess.run([*tmux, "new-session", "-d", "-x", "100", "-y", "40", "bash --norc"], env=env, check=True)
    try:
        subprocess.run([*tmux, "pipe-pane", "-o", f"cat > {tmp_path}/raw.bin"], check=True)
        subprocess.run([*tmux, "send-keys", f"bash {script}", "Enter"], check=True)
        deadline = time.monotonic() + 120
        while not (tmp_path / "done").exists():
            assert time.monotonic() < deadline, "the query did not finish in the terminal"
            time.sleep(0.2)
        screen = subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
        if server is not None:
            server.terminate()
    lines = [line.rstrip() for line in screen.splitlines()]
    end = lines.index("DONE-MARK")
    assert lines[end - len(expected) : end] == [line.rstrip() for line in expected]  # the answer, as piped
    assert "cosine shortlist" not in screen  # the view is gone
    raw = ANSI.sub("", (tmp_path / "raw.bin").read_bytes().decode("utf-8", "replace"))
    first = raw[: raw.index("cosine shortlist")]  # the first frame, before any rerank
    shown = re.findall(r"\bp\d\.png", first.rsplit(QUERY, 1)[1])
    assert shown == cosine_names
    assert "reranked so far" in raw and raw.index("reranked so far") < raw.rindex("DONE-MARK")
    if served:
        assert "answered by the server" in raw and "server not used" not in raw
