"""One reader for indexed files (bt_search/file_reading.py) and one decode_record, shared by the local indexer,
the Ray decode tasks and the rerank; the decode path stays light (issue 22 item 5)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from bt_search.media.decoding import Decoded, decode_record
from bt_search.media.scan import FileRecord
from tests.support.images import noise_image

LIGHT_IMPORTS = """
import sys
import bt_search.media.decoding, bt_search.distributed.stages
print(sorted(name for name in ("pyarrow", "torch", "ray", "pandas", "transformers") if name in sys.modules))
"""


def test_the_decode_path_imports_neither_pyarrow_nor_torch_nor_ray():
    done = subprocess.run([sys.executable, "-c", LIGHT_IMPORTS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_ray_stages_decode_with_the_indexer_s_decode_record():
    from bt_search.distributed import stages
    from bt_search.media import decoding

    assert stages.decode_record is decoding.decode_record


def test_a_path_and_its_url_decode_alike_and_fail_alike(engine, tmp_path):
    path = tmp_path / "a b.png"
    noise_image(3, 80, 60).save(path)
    local = decode_record(FileRecord(str(path), 0, 0), engine.preprocessing, draft=True)
    remote = decode_record(FileRecord(path.as_uri(), 0, 0), engine.preprocessing, draft=True)
    assert isinstance(local, Decoded) and isinstance(remote, Decoded)
    assert (local.sha256, local.width, local.height) == (remote.sha256, remote.width, remote.height)
    assert np.array_equal(local.pixels, remote.pixels)
    path.unlink()
    for source in (str(path), path.as_uri()):
        failed = decode_record(FileRecord(source, 0, 0), engine.preprocessing, draft=True)
        assert failed[0] == source and failed[1].startswith("cannot read file (")


def test_urls_of_one_bucket_share_a_filesystem_and_map_to_its_paths():
    from bt_search.media.file_reading import url_location

    first, inner = url_location("s3://bucket/a%20b/c.png?region=us-east-1")
    second, _ = url_location("s3://bucket/d.png?region=us-east-1")
    assert inner == "bucket/a b/c.png" and first is second
