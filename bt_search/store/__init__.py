"""The index directory (format 2: docs/format.md): a locked, crash-safe writer and a lock-free reader.

Layout of this package: files.py (names, atomic writes, lock, manifest I/O), manifest.py (manifest
values), records.py (rows <-> Arrow), parts.py (a pinned view of one manifest's files), writer.py,
reader.py, compaction.py (size-tiered merges), ann.py + ann_tuning.py (FAISS indexes sized to a memory
budget, tuned to a recall target), ann_upkeep.py + upkeep.py + exact_copy.py (the ANN file), legacy.py +
upgrade.py (format 1).
"""

from bt_search.store.ann.policy import INDEX_CHOICES, choose_index_type
from bt_search.store.files import FORMAT_VERSION
from bt_search.store.reader import IndexReader
from bt_search.store.records import FailedRow, ImageRow, IndexIdentity, IndexStats
from bt_search.store.writer import IndexWriter

__all__ = [
    "FORMAT_VERSION",
    "INDEX_CHOICES",
    "FailedRow",
    "ImageRow",
    "IndexIdentity",
    "IndexReader",
    "IndexStats",
    "IndexWriter",
    "choose_index_type",
]
