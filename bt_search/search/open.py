"""Open an index with the model that searches it, and check that the two share an embedding space.

The one way in for every caller: the CLI's `query` and `eval`, the server, and Python users
(`bt_search.open_searcher`). Torch loads only in `open_searcher`, when the model does, after every check that
needs no model (the index, the model's path).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bt_search import config
from bt_search.engine.weights import check_model_path
from bt_search.errors import IndexMissingError, ModelMismatchError
from bt_search.store import IndexIdentity, IndexReader


def open_index(index: str | os.PathLike[str] | None = None) -> IndexReader:
    """The index at `index` (`~` expanded; None: the default index), refused while it holds no images."""
    reader = IndexReader.open(config.index_dir(None if index is None else Path(index)))
    if len(reader) == 0:
        raise IndexMissingError(
            f"the index at {reader.directory} holds no images yet; index some first: "
            f"`bt-search index PATH --index {reader.directory}`"
        )
    return reader


def check_same_space(reader: IndexReader, engine: Any) -> None:
    """Refuse a model whose embeddings are not comparable with the index's (ModelMismatchError)."""
    if not reader.identity.same_embedding_space(IndexIdentity.of(engine)):
        raise ModelMismatchError(
            f"the index at {reader.directory} was built with {reader.identity.model} "
            f"(embedding size {reader.identity.embedding_dim}); {engine.model_id} embeds into another space. "
            "Search it with its own model, or build another index for this one"
        )


def open_searcher(
    index: str | os.PathLike[str] | None = None,
    model: str | None = None,
    *,
    device: str | None = None,
    precision: str = "auto",
    text_only: bool = False,
    batch_size: int | None = None,
    on_loading: Callable[[str], None] | None = None,
    **searcher_options: Any,
):
    """A Searcher over `index` (None: the default index) with `model` (None: the model the index was built
    with), after checking they share an embedding space.

    `device`: auto, cpu, cuda or mps (None: `$BT_SEARCH_DEVICE`, else auto). `text_only` loads just the text
    tower (cosine search, no rerank). `on_loading(model)` is called once every check has passed, just before
    the model loads (the slow part: a CLI says so). `searcher_options` go to `Searcher` (on_missing, on_note, progress,
    state_store).
    """
    reader = open_index(index)
    if model is None:
        model = reader.identity.model
        check_model_path(model, built=reader.directory)  # the index's own model: a folder that moved is said so
    else:
        check_model_path(model)  # a typo fails here, before torch loads
    from bt_search.engine.loading import load_engine  # torch: only once the index and the model path check out
    from bt_search.search.searcher import Searcher

    if on_loading is not None:
        on_loading(model)
    engine = load_engine(
        model,
        device=device or config.default_device(),
        precision=precision,
        text_only=text_only,
    )
    check_same_space(reader, engine)
    return Searcher(reader, engine, batch_size=batch_size or config.default_batch_size(), **searcher_options)
