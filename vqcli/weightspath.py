"""Where weights files are, without torch: the shipped folder, $VQ_WEIGHTS_PATH, and the lookup of
the weights a .vqz file names by their model id, read from the safetensors header alone (so that
`vq --version` and the lookup cost no model load).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .config import ModelConfig
from .errors import VQError

FORMAT = "vqcli-weights"
FORMAT_VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "default.safetensors"
WEIGHTS_PATH_ENV = "VQ_WEIGHTS_PATH"
MAX_HEADER = 100_000_000  # safetensors' own bound on the JSON header


def shipped_dir() -> Path:
    """The shipped weights' folder: inside the package when installed as a wheel (pyproject maps
    weights/ to vqcli/shipped/), else the repository's weights/ (editable install, source checkout)."""
    packaged = Path(__file__).resolve().parent / "shipped"
    return packaged if (packaged / DEFAULT_WEIGHTS.name).exists() else DEFAULT_WEIGHTS.parent


def default_weights_path() -> Path:
    """The shipped default weights (the model `vq compress` uses without --weights)."""
    return shipped_dir() / DEFAULT_WEIGHTS.name


def shipped_names() -> list[str]:
    """The names `--weights` takes for the shipped models: file names without .safetensors."""
    return sorted(p.stem for p in shipped_dir().glob("*.safetensors"))


def is_model_name(path: Path) -> bool:
    """A bare name (no folder, no suffix), which may name a shipped model."""
    return not path.suffix and len(path.parts) == 1


def resolve_weights(arg: Path | str | None) -> Path:
    """The file a weights argument means: None is the shipped default; a bare name that is no file
    here (no folder, no suffix) names a shipped model, e.g. `ms-ssim` or a model id."""
    if arg is None:
        return default_weights_path()
    path = Path(arg)
    if path.exists() or not is_model_name(path):
        return path
    shipped = shipped_dir() / f"{path}.safetensors"
    return shipped if shipped.exists() else path


def weights_search_path() -> list[Path]:
    """Folders searched for the weights a .vqz file names: $VQ_WEIGHTS_PATH (os.pathsep-separated,
    for a user's own models) first, then the shipped weights, which keep every released model so
    that old files keep decoding."""
    extra = [Path(p) for p in os.environ.get(WEIGHTS_PATH_ENV, "").split(os.pathsep) if p]
    return [*extra, shipped_dir()]


def read_metadata(path: Path | str) -> dict[str, str] | None:
    """The string metadata in a safetensors file's header (8-byte little-endian length, then JSON),
    reading only the header; None for a file that is not safetensors."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= MAX_HEADER:
                return None
            head = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    meta = head.get("__metadata__") if isinstance(head, dict) else None
    return meta if isinstance(meta, dict) else {}


def parse_config(path: Path, meta: dict[str, str], kind: str = FORMAT) -> ModelConfig:
    """The model config in the metadata of a weights file (or of a checkpoint: kind), or a VQError
    naming the file."""
    if meta.get("format") != kind:
        raise VQError(f"{path}: not vq weights (format is {meta.get('format')!r}, expected {kind!r})")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise VQError(f"{path}: written by an incompatible version (weights format "
                      f"{meta.get('format_version')}, this vq reads {FORMAT_VERSION})")
    try:
        return ModelConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError) as e:
        raise VQError(f"{path}: bad model config in metadata ({e})") from None


def read_config(path: Path | str) -> ModelConfig | None:
    """The model config a weights file's header records (reads the header only; no torch), or None
    for a file that is not readable vq weights (loading it names the problem)."""
    meta = read_metadata(path)
    if meta is None:
        return None
    try:
        return parse_config(Path(path), meta)
    except VQError:
        return None


def model_id_in_metadata(path: Path) -> str | None:
    """The model id a weights file's header metadata records (reads the header only; no torch)."""
    return (read_metadata(path) or {}).get("model_id")


def locate_weights(model_id: str, folders: list[Path]) -> Path | None:
    """The first weights file in `folders` whose header records `model_id`, or None."""
    for folder in folders:
        for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            if model_id_in_metadata(path) == model_id:
                return path
    return None


def find_weights(model_id: str, name: str = "<input>") -> Path:
    """The weights file of a model id, looked up in weights_search_path(); a VQError naming the id
    when none matches (`name`: the file that asks, for the message). The id in the header is
    checked against the tensors when the weights load."""
    folders = weights_search_path()
    found = locate_weights(model_id, folders)
    if found is not None:
        return found
    raise VQError(f"{name}: made with model {model_id}, and no weights of that id were found "
                  f"(searched {', '.join(map(str, folders))}; pass the weights file, or add its folder to {WEIGHTS_PATH_ENV})")
