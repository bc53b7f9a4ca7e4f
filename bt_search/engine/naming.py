"""How a model is named in an index's manifest and by a server: one rule for every path that compares names.

Standard library only: the light client (serve/client.py) names the model a query asks for without torch.
"""

from __future__ import annotations

import os


def model_name(model: str) -> str:
    """A local checkpoint directory by its resolved absolute path (so `./m`, `m/` and a symlink agree);
    a hub id as given."""
    local = os.path.expanduser(model)
    return os.path.realpath(local) if os.path.isdir(local) else model


def looks_like_path(model: str) -> bool:
    """Whether `model` reads as a local path rather than a hub id (`name` or `org/name`): it starts with `.`,
    `/` or `~`, holds a backslash or more than one `/`, or its first part names a folder here
    (`sample_data/demo-modle`: `sample_data` exists, so this is a mistyped path, not a repository)."""
    if model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1:
        return True
    return "/" in model and os.path.isdir(model.split("/")[0])
