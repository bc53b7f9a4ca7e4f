"""The index pipeline on Ray Data (`bt-search index --executor ray`); the only place that imports Ray.

This package imports lightly: Ray Data's decode workers import it, and must not pay for torch. `sources`
(folders, URLs, `--from-list` files) and `stages` (the decode and embed UDFs) never import Ray;
`index_with_ray` imports it when it runs. Install with `pip install "bt-search[distributed]"`.
"""

from __future__ import annotations

from bt_search.media.sources import list_sources, read_source_list

__all__ = ["index_with_ray", "list_sources", "read_source_list"]


def index_with_ray(*args, **kwargs):
    """Bring an index up to date on a Ray cluster: `pipeline.index_with_ray` (imported here, on first use)."""
    from bt_search.distributed.pipeline import index_with_ray as run

    return run(*args, **kwargs)
