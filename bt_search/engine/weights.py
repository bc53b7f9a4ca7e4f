"""A checkpoint's weight files: safetensors (preferred) or PyTorch `.bin`, single or sharded, read safely;
and the directory a model string names (local, or the HF cache). Importing this module imports no torch.

`.bin` files are pickles. They are read with `torch.load(weights_only=True)`, whose unpickler accepts
tensors and plain containers only, so a file that would run code is refused (ModelLoadError), never run.
With a conversion cache (`BT_SEARCH_WEIGHTS_CACHE`, or `cache_dir=`), a `.bin` checkpoint is converted once
to safetensors there, and every later load memory-maps that file instead of unpickling again.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bt_search.engine.naming import looks_like_path
from bt_search.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
ENV_WEIGHTS_CACHE = "BT_SEARCH_WEIGHTS_CACHE"
HUB_BASE_PATTERNS = ["*.json", "*.txt", "*.safetensors"]
HUB_BIN_PATTERNS = ["*.json", "*.txt", "*.bin"]
ITC_KEYS = ("itc_text_head.fc.weight", "itc_image_head.fc.weight")  # the contrastive heads search needs


def embedding_fingerprint(float32_arrays) -> str:
    """The index's model check: sha256 of the ITC text head's tensors as float32 bytes, in state_dict order
    (weight, bias), first 16 hex digits. Float32 whatever the checkpoint's or the engine's precision, so an
    engine (model.py) and the torch-free Ray driver (engine/facts.py) agree."""
    digest = hashlib.sha256()
    for array in float32_arrays:
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


@dataclass
class Weights:
    """Tensor name -> the file holding it, for one format ("safetensors" or "bin")."""

    format: str
    files: dict[str, Path]
    _loaded: dict[Path, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def directory(self) -> Path:
        return next(iter(self.files.values())).parent

    def read(self, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        """The tensors `names` (None: all), reading only the files that hold them."""
        names = list(self.files) if names is None else names
        out: dict[str, torch.Tensor] = {}
        for file in dict.fromkeys(self.files[n] for n in names):
            wanted = [n for n in names if self.files[n] == file]
            if self.format == "safetensors":
                with _open_safetensors(file) as handle:
                    out.update({n: handle.get_tensor(n) for n in wanted})
            else:
                state = self._bin_file(file)
                out.update({n: state[n] for n in wanted})
        return out

    def _bin_file(self, file: Path) -> dict[str, torch.Tensor]:
        if file not in self._loaded:
            self._loaded[file] = load_bin(file)
        return self._loaded[file]


def checkpoint_weights(checkpoint: Path, cache_dir: Path | None = None) -> Weights:
    """The weights of `checkpoint`: safetensors when present, else `.bin` (converted once when a cache is set)."""
    safetensors = _safetensors_files(checkpoint)
    if safetensors is not None:
        return Weights("safetensors", safetensors)
    bin_map = _bin_weight_map(checkpoint)
    if bin_map is None:
        raise ModelLoadError(
            f"{checkpoint} has neither {SAFETENSORS_FILE} nor {BIN_FILE} (nor their sharded .index.json forms); "
            "bt-search loads safetensors or PyTorch .bin weights"
        )
    cache_dir = cache_dir or _env_cache_dir()
    if cache_dir is not None:
        return converted(bin_map, cache_dir)
    if isinstance(bin_map, Path):  # one file: its tensor names are known only by reading it
        return Weights("bin", {name: bin_map for name in load_bin(bin_map)})
    return Weights("bin", bin_map)


def _env_cache_dir() -> Path | None:
    value = os.environ.get(ENV_WEIGHTS_CACHE)
    return Path(value).expanduser() if value else None


def read_weight_map(index: Path) -> dict[str, Path]:
    """Tensor name -> shard file. Every shard must be a file inside the checkpoint directory: an index naming
    `../x` or `/etc/x` is refused, never followed."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict):
            raise ValueError("weight_map is not an object")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"{index} is not a readable weight index ({err})") from None
    directory = index.parent.resolve()
    files = {}
    for name, file in weight_map.items():
        if not isinstance(file, str) or (directory / file).resolve().parent != directory:
            raise ModelLoadError(
                f"{index} names shard {file!r} outside the checkpoint directory {directory}; refusing to read it"
            )
        files[name] = directory / file
    return files


@contextmanager
def _open_safetensors(file: Path) -> Iterator[Any]:
    """safetensors' reader, with a damaged or truncated file reported as a ModelLoadError naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            yield handle
    except (SafetensorError, OSError) as err:
        raise ModelLoadError(
            f"{file} is damaged or incomplete ({err}); download or copy the checkpoint again"
        ) from None


def _safetensors_files(checkpoint: Path) -> dict[str, Path] | None:
    if (checkpoint / SAFETENSORS_INDEX).is_file():
        return read_weight_map(checkpoint / SAFETENSORS_INDEX)
    single = checkpoint / SAFETENSORS_FILE
    if not single.is_file():
        return None
    with _open_safetensors(single) as handle:
        return {name: single for name in handle.keys()}


def _bin_weight_map(checkpoint: Path) -> dict[str, Path] | Path | None:
    """Tensor name -> shard from the index, or the single .bin file itself (names unread), or None."""
    if (checkpoint / BIN_INDEX).is_file():
        return read_weight_map(checkpoint / BIN_INDEX)
    single = checkpoint / BIN_FILE
    return single if single.is_file() else None


def load_bin(path: Path) -> dict[str, torch.Tensor]:
    """One `.bin` state dict through torch's weights-only unpickler; anything that would run code is refused."""
    import torch

    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            state = torch.load(str(path), map_location="cpu", weights_only=True)  # legacy (pre-zip) format
    except pickle.UnpicklingError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"refused to load {path}: it is a pickle that holds more than tensors, and loading it could run code "
            f"({first_line}). Use a safetensors checkpoint, or one whose .bin holds tensors only"
        ) from None
    except (OSError, RuntimeError, EOFError) as err:
        raise ModelLoadError(f"could not read weights from {path}: {err}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} is not a state dict of tensors")
    return state


def converted(bin_map: dict[str, Path] | Path, cache_dir: Path) -> Weights:
    """The `.bin` weights as one safetensors file under `cache_dir`, written once (atomically) per source."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    sources = [bin_map] if isinstance(bin_map, Path) else sorted(set(bin_map.values()))
    target = cache_dir / _source_key(sources) / SAFETENSORS_FILE
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.contiguous() for file in sources for name, t in load_bin(file).items()}
        _untie(tensors)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    with safe_open(str(target), framework="pt") as handle:
        return Weights("safetensors", {name: target for name in handle.keys()})


def _source_key(sources: list[Path]) -> str:
    """Changes whenever a source file is replaced: its path, size and modification time."""
    digest = hashlib.sha256()
    for file in sources:
        st = file.stat()
        digest.update(f"{file.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _untie(tensors: dict[str, torch.Tensor]) -> None:
    """safetensors refuses tensors sharing memory (tied weights in a .bin): give each its own copy."""
    seen: set[int] = set()
    for name, tensor in tensors.items():
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen:
            tensors[name] = tensor.clone()
        seen.add(pointer)


def missing_safetensors(snapshot: Path) -> bool:
    """Whether a hub snapshot downloaded with HUB_BASE_PATTERNS lacks safetensors weights (so: fetch `.bin`)."""
    return not any(snapshot.glob("*.safetensors"))


def check_model_path(model: str, built: str | os.PathLike[str] | None = None) -> Path | None:
    """The local checkpoint directory `model` names; None for a hub id (naming.looks_like_path tells them apart).
    A path that names no directory raises ModelLoadError: no download, no torch, so a typo fails in a moment,
    with the nearest name in its folder. `built`: the index whose recorded model `model` is (its folder may
    have moved since; the message says how to point the index at the new place)."""
    local = Path(model).expanduser()
    if local.is_dir():
        return local.resolve()
    if local.exists():
        raise ModelLoadError(f"model {model!r} is a file; `model` takes a checkpoint directory or a hub id")
    if not looks_like_path(model):
        return None
    if built is not None:
        raise ModelLoadError(
            f"the index at {built} was built with the model in {model}, which is no longer there; if the "
            "checkpoint moved, pass its new folder as `model` (the index checks it is the same checkpoint)"
        )
    raise ModelLoadError(
        f"model directory {model!r} does not exist{_near_miss(local)}; `model` takes a checkpoint directory, "
        "or a hub id such as BridgeTower/bridgetower-large-itm-mlm-itc"
    )


def _near_miss(path: Path) -> str:
    """ " (did you mean X?)" for the name in `path`'s folder closest to its own, or ""."""
    import difflib

    try:
        names = os.listdir(path.parent)
    except OSError:
        return ""
    near = difflib.get_close_matches(path.name, names, n=1)
    return f" (did you mean {path.parent / near[0]}?)" if near else ""


def resolve_checkpoint(model: str, revision: str | None = None) -> tuple[Path, str | None]:
    """A local directory as is; a hub id through the HF cache (downloading if allowed). Returns (dir, revision)."""
    local = check_model_path(model)
    if local is not None:
        return local, None
    return _download(model, revision)


def _download(repo_id: str, revision: str | None) -> tuple[Path, str | None]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_BASE_PATTERNS))
        if missing_safetensors(path):  # older repos ship only pytorch_model.bin: fetch it, and only then
            path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_BIN_PATTERNS))
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"model {repo_id!r} was not found on the Hugging Face hub; check the id, or pass `model` DIR for a "
            "local checkpoint directory"
        ) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise ModelLoadError(_offline_advice(repo_id, err)) from None
    return path, path.name if len(path.name) == 40 else revision


def _offline_advice(repo_id: str, err: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    why = (
        "HF_HUB_OFFLINE=1 is set and it is not in the HF cache"
        if offline
        else f"it could not be downloaded ({type(err).__name__})"
    )
    return (
        f"cannot load model {repo_id!r}: {why}. Point `model` at a local checkpoint directory "
        f"(e.g. `model=sample_data/demo-model`), or download it once on a connected machine "
        f"(`hf download {repo_id}`: huggingface_hub's tool, installed with bt-search) so it sits in the HF cache "
        "(HF_HOME), then set HF_HUB_OFFLINE=1"
    )
