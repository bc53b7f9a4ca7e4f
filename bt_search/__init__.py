"""bt-search: text-to-image search over your own folders with BridgeTower.

The public API, importable from `bt_search` itself (everything else is internal and may move):

- `open_searcher(index, model=None, device=None, precision="auto")` opens an index with the model that
  built it (or `model`), checks that they share an embedding space, and returns a `Searcher`.
- `Searcher.search(queries, top_k=10, ...)` returns one list of `Hit` per query, best first;
  `Searcher.similar_images(path, ...)` searches by an image; `search(..., explain=True)` gives each hit an
  `Explanation` (heatmaps of where it matched the query and each word).
- `index_paths(paths, writer, engine, ...)` brings an index up to date with folders, files or URLs;
  `IndexWriter.open(directory, IndexIdentity.of(engine))` is the writer, `load_engine(model)` the model.
- `IndexReader.open(directory)` reads an index without a model (rows, counts, vector search).
- `Watcher(index, folders, engine)` keeps an index current with its folders (`start()`, `run()`; extra `watch`).
- Errors are `BtSearchError` and its subclasses; `UsageError` means the arguments were wrong.

    import bt_search
    searcher = bt_search.open_searcher("~/.local/share/bt-search/default")
    for hit in searcher.search(["two cats on a couch"])[0]:
        print(hit.rank, hit.score, hit.path)

Names load on first use, so `import bt_search` stays light (no torch until a model loads).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_HOMES = {
    "open_searcher": "bt_search.search.open",
    "Searcher": "bt_search.search.searcher",
    "Hit": "bt_search.search.hits",
    "Explanation": "bt_search.search.hits",
    "index_paths": "bt_search.indexing.run",
    "IndexReport": "bt_search.indexing.run",
    "IndexProgress": "bt_search.indexing.progress",
    "IndexReader": "bt_search.store",
    "IndexWriter": "bt_search.store",
    "IndexIdentity": "bt_search.store",
    "load_engine": "bt_search.engine.loading",
    "Watcher": "bt_search.watch.watcher",
    "WatchOptions": "bt_search.watch.watcher",
    "BtSearchError": "bt_search.errors",
    "UsageError": "bt_search.errors",
    "ModelLoadError": "bt_search.errors",
    "MissingHeadError": "bt_search.errors",
    "ModelMismatchError": "bt_search.errors",
    "IndexMissingError": "bt_search.errors",
    "IndexFormatError": "bt_search.errors",
    "IndexLockedError": "bt_search.errors",
    "ImageDecodeError": "bt_search.errors",
}
__all__ = ["__version__", *_HOMES]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'bt_search' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
