"""`serve --watch`: a watcher thread that keeps the served index current, sharing the server's engine (one
backbone in memory) and taking turns with the searches on it; the server answers from each commit as it lands
(Service.refresh), and /health and the page say what the watcher is doing."""

from __future__ import annotations

import threading

from bt_search.errors import UsageError
from bt_search.indexing.roots import recorded_roots
from bt_search.serve.service import Service
from bt_search.watch.status import WatchStatus
from bt_search.watch.watcher import SharedEngine, Watcher, WatchOptions, require_watchfiles

WATCH_BATCH = 8  # images per model turn: a search waits for at most one such batch


def start_watching(service: Service, poll: float | None, batch_size: int, say, stop: threading.Event) -> Watcher:
    """Watch the folders the index records, in a daemon thread: catch up first, then follow changes until `stop`."""
    require_watchfiles()
    roots = recorded_roots(service.reader.manifest.get("settings") or {})
    if not roots:
        raise UsageError(
            f"the index {service.index_dir} records no folders to watch (it was built before indexes recorded "
            "them): run `bt-search index FOLDER` once for each folder, then serve again"
        )
    status = WatchStatus()
    service.watch_status = status
    options = WatchOptions(poll=poll, batch_size=min(batch_size, WATCH_BATCH), workers=0)
    engine = SharedEngine(service.engine, service.model_lock)
    watcher = Watcher(service.index_dir, roots, engine, options=options, status=status, say=say, stop=stop)

    def follow() -> None:
        try:
            watcher.start()
            watcher.catch_up()
            watcher.run()
        except Exception as err:  # noqa: BLE001 - the server keeps answering; /health says why nothing is indexed
            status.update(error=f"the watcher stopped: {err}", mode="stopped", indexing=0)
            say(f"the watcher stopped: {err}")
        finally:
            watcher.close()

    threading.Thread(target=follow, name="watch", daemon=True).start()
    return watcher
