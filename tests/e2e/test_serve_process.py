"""`bt-search serve` as a user runs it: query auto-attach (byte-identical, torch-free), refusals, load, reload,
SIGTERM and the fallback after the server is gone. One server process for the whole module.

Served queries run as real processes (with torch, typer and rich poisoned where the fast path must not load
them); the in-process answers they must equal run the typer app here, with --no-server: a child process per
reference would only add seconds of imports."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
from PIL import Image
from typer.testing import CliRunner

from bt_search.cli.app import app
from bt_search.serve.service import thumb_key
from tests.support.cli import cli, cli_index
from tests.support.images import noise_image
from tests.support.serve import ServerProcess
from tests.support.videos import write_video

QUERY = "two green triangles"


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    photos, runtime = root / "photos", root / "run"
    (photos / "sub").mkdir(parents=True)
    runtime.mkdir(mode=0o700)
    for i in range(12):
        noise_image(700 + i, 64, 60 + i).save(photos / ("sub" if i % 4 == 0 else "") / f"p{i:02d}.png")
    noise_image(799, 64, 64).save(root / "not-indexed.png")
    exif = Image.Exif()  # one photo with a capture date: every output carries its taken_at
    exif.get_ifd(0x8769)[0x9003] = "2021:07:04 10:11:12"
    noise_image(798, 64, 64).save(photos / "dated.jpg", exif=exif, quality=95)
    write_video(photos / "clip.mkv", scenes=(0, 1, 2), seconds_each=5)  # 3 frame rows: every output carries t
    index = root / "index"
    cli_index([photos], index, tiny_checkpoint, "--quiet")
    # Poisoned packages on the path: a served query never imports torch or transformers, and the attach fast
    # path (serve/attach.py) not the full CLI's stack either; rich only for --format table.
    poison = root / "poison"
    groups = {"model": ("torch", "transformers", "numpy"), "cli": ("typer", "pydantic"), "rich": ("rich",)}
    for group, name in ((group, name) for group, names in groups.items() for name in names):
        folder = poison / group / name
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text(f"raise ImportError('{name} imported on the client path')\n")
    server = ServerProcess(index, runtime, "--state-cache-mb", "1", "--max-queue", "2", "--batch-size", "4")
    yield {"root": root, "photos": photos, "index": index, "runtime": runtime, "poison": poison, "server": server}
    server.terminate()


def run_cli(runtime, *args, poison=(), **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), BT_SEARCH_WORKERS="0")
    if poison:
        env["PYTHONPATH"] = os.pathsep.join([*map(str, poison), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "bt_search", *map(str, args)], capture_output=True, env=env, **kwargs)


def fast_path_poison(setup, args) -> list:
    """Packages the attach fast path must not import for `query ARGS` (rich draws --format table)."""
    return [setup["poison"] / group for group in ("model", "cli", "rich") if group != "rich" or "table" not in args]


def in_process(setup, *args, input=None) -> subprocess.CompletedProcess:
    """`bt-search query ARGS --no-server` run by the typer app in this process, as a CompletedProcess."""
    env = {"XDG_RUNTIME_DIR": str(setup["runtime"]), "BT_SEARCH_WORKERS": "0"}
    result = CliRunner().invoke(
        app, ["query", *map(str, args), "--index", str(setup["index"]), "--no-server"], input=input, env=env
    )
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout_bytes, result.stderr_bytes)


def query(setup, *args, served: bool, **kwargs):
    """`bt-search query ARGS`; served: a process through the attach fast path with torch, typer, rich...
    poisoned; else in-process with --no-server."""
    if served:
        poison = fast_path_poison(setup, args)
        result = run_cli(setup["runtime"], "query", *args, "--index", setup["index"], poison=poison, **kwargs)
    else:
        result = in_process(setup, *args, **kwargs)
    assert result.returncode == 0, result.stderr.decode()
    return result


CASES = [
    (QUERY, "-k", "5"),
    (QUERY, "-k", "3", "--shortlist", "7", "--format", "csv"),
    ("a red circle", QUERY, "a photo of two cats", "-k", "4", "--no-rerank", "--format", "tsv"),
    ("a red circle", "-k", "12", "--threshold", "0.4", "--format", "paths", "-0"),
    (QUERY, "-k", "3", "--under", "{photos}/sub"),
    ("--image", "{photos}/p03.png", "-k", "4"),
    ("a red circle", QUERY, "--format", "table", "-n", "5", "-k", "2"),
    (QUERY, "--format=jsonl", "--top-k=3", "--quiet", "--device", "cpu", "--precision", "auto", "--batch-size", "3"),
]


@pytest.mark.parametrize("args", CASES, ids=lambda args: " ".join(args)[:40])
def test_query_through_the_server_is_byte_identical_and_torch_free(setup, args):
    args = [a.format(photos=setup["photos"]) for a in args]
    served, local = query(setup, *args, served=True), query(setup, *args, served=False)
    assert served.stdout == local.stdout and served.stdout
    assert b"server not used" not in served.stderr


# Together these set every option of `query` (the test checks that against the option table, so a new option
# fails it until it is added here); the harness adds --index, and --no-server for the in-process run.
EVERY_OPTION = [
    ("--queries-file", "{queries}", "--not", "dogs::0.5", "--like", "{photos}/p01.png", "--unlike", "{photos}/p02.png"),
    (QUERY, "--score", "itm", "-k", "14", "-n", "16", "--after", "2000-01-01", "--before", "2100-12-31", "--no-fold"),
    (QUERY, "--sort", "date", "--rerank-budget", "60", "--threshold", "-5", "--format", "tsv", "--verbose"),
    (QUERY, "--min-match", "0.01", "-k", "4", "--score", "cosine", "-f", "csv"),
    ("--image", "{photos}/p03.png", "-k", "16", "--under", "{photos}", "-f", "jsonl", "--frames", "all", "--no-fold"),
    (QUERY, "--model", "{model}", "--device", "cpu", "--precision", "auto", "--batch-size", "2", "--no-rerank"),
    (QUERY, "-f", "paths", "-0", "-q", "--score", "cosine", "--html", "{html}"),
    (QUERY, "-k", "3", "--explain", "-f", "jsonl", "--html", "{html}"),
    ("a red circle", "-k", "2", "--explain-dir", "{explain}", "-f", "jsonl"),
]


def test_every_option_set_in_the_cases_below():
    from bt_search.cli.options import QUERY_OPTIONS

    spelled = {token.split("=")[0] for case in EVERY_OPTION for token in case} | {"--index", "--no-server"}
    assert [option.name for option in QUERY_OPTIONS if not spelled & set(option.flags)] == []


@pytest.mark.parametrize("args", EVERY_OPTION, ids=lambda args: " ".join(args)[:40])
def test_every_option_answers_the_same_through_the_server_as_in_process(setup, tiny_checkpoint, tmp_path, args):
    queries = tmp_path / "queries.txt"
    queries.write_text(f"a red circle --not blue::2\n{QUERY} --like {setup['photos']}/p06.png\n")
    paths = {"photos": setup["photos"], "queries": queries, "model": tiny_checkpoint}
    outputs = []
    for served in (True, False):
        html, explain = tmp_path / f"sheet-{served}.html", tmp_path / f"explain-{served}"
        argv = [token.format(**paths, html=html, explain=explain) for token in args]
        poison = [setup["poison"] / "model"]  # torch cannot load: served means the server answered
        extra = () if served else ("--no-server",)
        result = run_cli(
            setup["runtime"], "query", *argv, "--index", setup["index"], *extra, poison=poison if served else ()
        )
        assert result.returncode == 0, result.stderr.decode()
        assert b"server not used" not in result.stderr
        pngs = {p.name: p.read_bytes() for p in sorted(explain.iterdir())} if explain.exists() else None
        outputs.append((result.stdout, html.read_bytes() if html.exists() else None, pngs))
    assert outputs[0] == outputs[1] and outputs[0][0]
    if "-k" in args and args[args.index("-k") + 1] in ("14", "16"):  # every file: the dated one, the video
        assert b"2021-07-04T10:11:12" in outputs[0][0] and b"clip.mkv" in outputs[0][0]
    if "--frames" in args:  # each of the video's frames, with its time
        times = sorted(json.loads(line)["t"] for line in outputs[0][0].splitlines() if b"clip.mkv" in line)
        assert times == [0.0, 5.0, 10.0]
    if "--explain" in args or "--explain-dir" in args:  # every hit explained, its maps the same served or not
        assert all("explanation" in json.loads(line) for line in outputs[0][0].splitlines())
        assert outputs[0][1] is None or b'class="heat"' in outputs[0][1]
        assert outputs[0][2] is None or len(outputs[0][2]) >= 2 * 2  # per hit: the query and its words
    if "--not" in args:  # reranked with negatives: the served hits carry the combined ITM probability too
        assert all(type(json.loads(line)["itm"]) is float for line in outputs[0][0].splitlines())


@pytest.mark.parametrize(("min_match", "status"), [("0", 0), ("1", 6)])
def test_min_match_exit_status_is_the_same_served_and_in_process(setup, min_match, status):
    args = (QUERY, "-k", "3", "--min-match", min_match, "-f", "jsonl")
    served = run_cli(setup["runtime"], "query", *args, "--index", setup["index"], poison=[setup["poison"] / "model"])
    local = in_process(setup, *args)
    assert served.returncode == local.returncode == status, served.stderr.decode()
    assert served.stdout == local.stdout and len(served.stdout.splitlines()) == (3 if status == 0 else 0)
    assert b"server not used" not in served.stderr


def test_a_served_query_streams_the_shortlist_then_the_reranked_order(setup, monkeypatch):
    """What the CLI's terminal view hears through a server (cli/live.py): the shortlist, then each rerank chunk's
    order, and an answer equal to the in-process one."""
    import io

    from bt_search.output.hits import write_query_output
    from bt_search.search.query import QueryRequest
    from bt_search.serve.client import served_results

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(setup["runtime"]))
    text = "a blue square under a yellow sun"  # asked nowhere else: the server computes it (4 per rerank chunk)
    heard, notices = [], []
    results, notes = served_results(
        str(setup["index"]),
        model=None,
        device="auto",
        precision="auto",
        request=QueryRequest(queries=(text,), top_k=5, shortlist=8, fold=False),
        on_missing=lambda path, reason: notices.append(path),
        notice=notices.append,
        on_update=heard.append,
    )
    assert notices == [] and len(heard) >= 2
    assert all(hit.itm is None and hit.query == text for hit in heard[0][0])  # the cosine shortlist, named
    ranks = [hit.shortlist_rank for hit in heard[0][0]]
    assert len(ranks) == 5 and ranks == sorted(ranks) and ranks[0] == 1  # in cosine order
    assert any(hit.itm is not None for hit in heard[1][0])
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="\n")
    write_query_output(results, "jsonl", stream)
    printed = stream.detach()
    local = in_process(setup, text, "-k", "5", "-n", "8", "--no-fold", "-f", "jsonl")
    assert printed.getvalue() == local.stdout and local.stdout


def test_queries_file_batch_through_the_server(setup, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text("a red circle\n\ntwo green triangles\na yellow star above a red cross\n")
    served = query(setup, "--queries-file", queries, "-k", "3", served=True)
    assert served.stdout == query(setup, "--queries-file", queries, "-k", "3", served=False).stdout
    assert len(served.stdout.splitlines()) == 9


def test_queries_from_stdin_through_the_fast_path(setup):
    lines = b"a red circle\n\ntwo green triangles\n"
    args = ("--queries-file", "-", "-k", "2", "--format", "csv")
    served = query(setup, *args, served=True, input=lines)
    assert (
        served.stdout == query(setup, *args, served=False, input=lines).stdout
        and served.stdout.count(b"\n") == 5
        and b"\r" not in served.stdout
    )


def heavy_modules_after(setup, entry: str, heavy: tuple[str, ...], *options: str) -> list[str]:
    """Run one served `query` through `entry` ("from M import F" as `run`) in a fresh interpreter; the
    modules of `heavy` it imported."""
    code = (
        "import sys\n"
        f"{entry} as run\n"
        "try:\n"
        f"    run(['query', {QUERY!r}, '--index', {str(setup['index'])!r}, '-k', '1', *{options!r}])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        f"print(repr(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})), file=sys.stderr)\n"
    )
    env = dict(os.environ, XDG_RUNTIME_DIR=str(setup["runtime"]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["query"] == QUERY
    return ast.literal_eval(result.stderr.strip().splitlines()[-1])


def test_the_fast_path_loads_neither_torch_nor_the_full_cli(setup):
    heavy = ("torch", "transformers", "numpy", "typer", "click", "rich", "pydantic", "starlette", "uvicorn")
    assert heavy_modules_after(setup, "from bt_search.cli.launcher import main", heavy, "--no-rerank") == []


@pytest.mark.parametrize(
    "args", [(QUERY, "--sort", "relevance", "-k", "3"), (QUERY, "-k3", "--no-rerank")], ids=["slow-option", "glued"]
)
def test_arguments_the_fast_parser_leaves_go_to_typer_and_still_use_the_server(setup, args):
    served = run_cli(setup["runtime"], "query", *args, "--index", setup["index"], poison=[setup["poison"] / "model"])
    assert served.returncode == 0, served.stderr  # typer ran (not poisoned here), torch did not: the server answered
    assert served.stdout == query(setup, *args, served=False).stdout and served.stderr == b""


def test_an_error_answered_by_the_server_reads_as_in_process(setup, tmp_path):
    args = ("a red circle", "--under", tmp_path, "-k", "3")  # an existing folder holding no indexed image
    served = run_cli(setup["runtime"], "query", *args, "--index", setup["index"])
    local = in_process(setup, *args)
    assert (served.returncode, served.stderr, served.stdout) == (local.returncode, local.stderr, local.stdout)
    assert served.returncode == 2 and b"no indexed images under" in served.stderr


def test_client_modules_in_a_subprocess_exclude_torch_and_the_server_stack(setup):
    heavy = ("torch", "transformers", "numpy", "starlette", "uvicorn")
    assert heavy_modules_after(setup, "from bt_search.cli.app import app", heavy) == []


def test_a_mismatched_server_is_not_used_and_says_so_once(setup, tiny_checkpoint, tmp_path):
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "copy-of-the-model")  # same space, another model path
    args = (QUERY, "-k", "3", "--model", copy)
    result = run_cli(setup["runtime"], "query", *args, "--index", setup["index"])
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode().count("server not used") == 1 and b"copy-of-the-model" in result.stderr
    assert result.stdout == query(setup, *args, served=False).stdout


def test_the_search_page_shows_heatmaps_when_asked(setup):
    server = setup["server"]
    status, headers, plain = server.request("GET", "/?q=a+red+circle")
    assert status == 200 and b'class="heat"' not in plain  # off unless asked for
    status, headers, first = server.request("GET", "/?q=a+yellow+star&explain=true")  # not cached: shortlist first
    assert status == 200 and b'class="heat"' not in first and b"explain=true" in first  # the reranked page asks too
    status, headers, body = server.request("GET", "/?q=a+red+circle&explain=true&ranked=1")
    assert status == 200 and b'class="heat"' in body and b'value="red"' in body and b"<script" not in body
    assert "img-src 'self' data:" in headers["content-security-policy"]


def test_host_header_and_cross_origin_refusals(setup):
    server = setup["server"]
    for host in ("evil.example", f"evil.example:{server.port}", f"127.0.0.1.evil.example:{server.port}", ""):
        status, headers, _ = server.request("GET", "/health", headers={"Host": host})
        assert status == 421, host
    status, headers, _ = server.request("GET", "/api/search?q=red", headers={"Origin": "http://evil.example"})
    assert status == 403 and not any(name.lower().startswith("access-control-") for name in headers)
    status, headers, body = server.request("GET", "/?q=red")
    assert status == 200 and headers["content-security-policy"].startswith("default-src 'none'")
    assert b"<script" not in body


def test_no_path_or_parameter_opens_a_file_that_is_not_an_indexed_row(setup):
    server, outside = setup["server"], setup["root"] / "not-indexed.png"
    secret = setup["root"] / "secret.txt"
    secret.write_text("root:x:0:0 secret")
    probes = [
        "/thumb/../../../../etc/passwd",
        "/thumb/..%2f..%2f..%2fetc%2fpasswd",
        "/thumb/%2e%2e/%2e%2e/etc/passwd",
        f"/thumb/{quote(str(secret), safe='')}",
        "/page.css/../../etc/passwd",
        "/../../etc/passwd",
        f"/api/similar?path={quote(str(outside))}",
        f"/api/similar?path={quote(str(secret))}",
        f"/api/similar?path={quote(str(setup['photos']))}/../not-indexed.png",
        "/api/similar?key=../../etc/passwd",
        f"/?similar={quote(str(outside))}",
        "/?similar=..%2F..%2Fetc%2Fpasswd",
        "/image/../../../../etc/passwd",
        "/image/..%2f..%2fetc%2fpasswd",
        f"/image/{quote(str(secret), safe='')}",
        f"/image/{thumb_key(str(outside))}",  # the key of a file that is no hit
    ]
    for probe in probes:
        status, _, body = server.request("GET", probe)
        assert status in (404, 400), probe
        assert b"secret" not in body and b"root:" not in body, probe
    for path in (str(outside), str(secret), "/etc/passwd"):
        status, _, _ = server.request(
            "POST", "/api/similar", json.dumps({"path": path}).encode(), {"Content-Type": "application/json"}
        )
        assert status == 404, path
    # The control: an indexed image's similar images and a returned hit's thumbnail are served.
    indexed = str(setup["photos"] / "p01.png")
    hits = server.get_json(f"/api/similar?path={quote(indexed)}&top_k=2")["hits"]
    assert hits[0]["path"] == indexed
    status, headers, jpeg = server.request("GET", server.get_json("/api/search?q=red&top_k=1")["thumbnails"][0])
    assert status == 200 and headers["content-type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
    thumbnail = server.get_json("/api/search?q=red&top_k=1")["thumbnails"][0]
    status, headers, jpeg = server.request("GET", thumbnail.replace("/thumb/", "/image/"))  # the full-size view
    assert status == 200 and headers["content-type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"


def test_bounded_load_every_request_answered_or_cleanly_refused(setup):
    server = setup["server"]
    server.get_json("/api/search?q=warm+up&shortlist=8")
    rss_before = server.rss_kib()
    statuses: Counter = Counter()
    lock = threading.Lock()

    def one(i: int) -> None:
        kind = i % 4
        if kind == 0:
            path = f"/api/search?q=query+number+{i}&top_k=3&shortlist=12"  # distinct rerank: model work
        elif kind == 1:
            path = f"/api/search?q=cosine+{i}&rerank=false"
        elif kind == 2:
            path = "/api/search?q=warm+up&shortlist=8"  # the result cache
        else:
            path = "/health"
        status, _, body = server.request("GET", path, timeout=120)
        if status == 200:
            json.loads(body)
        with lock:
            statuses[status] += 1

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(320)))
    assert sum(statuses.values()) == 320
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses[200] >= 160 and statuses[429] > 0, statuses  # the queue of 2 did fill, and was refused cleanly
    assert server.process.poll() is None
    health = server.get_json("/health")
    assert health["state_cache"]["bytes"] <= health["state_cache"]["budget"] == 1 << 20
    assert server.rss_kib() - rss_before < 200 * 1024, (rss_before, server.rss_kib())


def test_reload_after_reindexing(setup, tiny_checkpoint):
    server, photos = setup["server"], setup["photos"]
    before = server.get_json("/health")
    added = photos / "added.png"
    noise_image(777, 64, 64).save(added)
    result = cli("index", photos, "--index", setup["index"], "--quiet")  # in-process: the server is the subject
    assert result.exit_code == 0, result.output
    after = server.get_json("/health")
    assert after["generation"] > before["generation"] and after["images"] == before["images"] + 1
    args = ("--image", added, "-k", "3")
    served = query(setup, *args, served=True)
    assert json.loads(served.stdout.splitlines()[0])["path"] == str(added)
    assert served.stdout == query(setup, *args, served=False).stdout
    repeat = (QUERY, "-k", "13", "--no-rerank")
    assert query(setup, *repeat, served=True).stdout == query(setup, *repeat, served=False).stdout


def test_files_gone_since_indexing_are_reported_as_in_process(setup, tmp_path):
    gone = setup["photos"] / "p05.png"
    kept = shutil.move(gone, tmp_path / "p05.png")
    try:
        args = ("a red circle", "-k", "12", "--no-rerank", "--format", "tsv")
        served = run_cli(setup["runtime"], "query", *args, "--index", setup["index"])
        local = in_process(setup, *args)
        assert served.returncode == local.returncode == 0, served.stderr
        assert (served.stdout, served.stderr) == (local.stdout, local.stderr)
        assert served.stderr.count(b"skipped") == 1 and b"p05.png" in served.stderr and b"p05.png" not in served.stdout
        quiet = query(setup, *args, "--quiet", served=True)  # nothing to say: the fast path prints it
        assert quiet.stdout == served.stdout and quiet.stderr == b""
    finally:
        shutil.move(kept, gone)


def test_idle_timeout_stops_the_server_cleanly(setup, tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    idle = ServerProcess(setup["index"], runtime, "--idle-timeout", "2s")
    assert idle.get_json("/health")["images"] > 0
    assert idle.process.wait(timeout=120) == 0
    assert "no request for 2 s" in idle.process.stderr.read() and not idle.advert.exists()


def test_sigterm_stops_cleanly_then_queries_fall_back(setup):
    server, plain = setup["server"], (QUERY, "-k", "3", "--no-rerank")  # no rerank: no timing-dependent estimate note
    advert = server.advert.read_text()
    assert server.terminate() == 0
    assert not server.advert.exists()
    assert b"Traceback" not in server.process.stderr.read().encode()
    silent = run_cli(setup["runtime"], "query", *plain, "--index", setup["index"])
    assert silent.returncode == 0 and silent.stderr == b""  # no server advertised: nothing to say
    fd = os.open(server.advert, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # a stale advert, as a killed
    os.write(fd, advert.encode())  # server leaves behind (mode 0600 as written: others are not trusted)
    os.close(fd)
    stale = run_cli(setup["runtime"], "query", *plain, "--index", setup["index"])
    assert stale.returncode == 0, stale.stderr
    assert stale.stderr.decode().count("\n") == 1 and "server not used" in stale.stderr.decode()
    assert stale.stdout == silent.stdout == query(setup, *plain, served=False).stdout
    shutil.rmtree(setup["runtime"] / "bt-search")
