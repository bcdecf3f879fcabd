"""Weights files: safetensors with the model config, a model id and index statistics.

Layout of a release file:
- network and codebook tensors (the model's state dict, EMA training state dropped);
- ``stats.histogram`` [S, K] int64: per-stage index counts over the training data, from
  which the codec derives its entropy-coding prior; other ``stats.*`` tensors may follow;
  count tables whose counts all fit are stored as uint16, and the metadata's ``count_dtypes``
  (JSON {tensor: "int32" or "int64"}) names the dtype each stands for; larger ones are stored
  deflated (zlib, a uint8 tensor of the little-endian array), ``count_deflated`` (JSON
  {tensor: {"dtype": ..., "shape": [...]}}) naming what each stands for. The loader unpacks
  them, so the codec and the model id see the same tensors however a file is stored (enhancement
  layers' files too);
- metadata (all strings): ``format`` = "vqcli-weights", ``format_version``, ``config``
  (ModelConfig JSON), ``model_id`` (hash of every tensor), ``training`` (JSON summary) and,
  optionally, ``default_quality``: the rate `vq compress` uses without a rate flag, chosen for a
  release by measurement (set_default_quality); without it, vqcli.codec.default_quality.
  (Releases before stage maps named ``default_stages``, a uniform stage count; it is ignored.)
  ``base_model``, optionally: the model id of a complete release whose tensors this file shares
  and omits (a release that only re-collected statistics stores no network); the loader takes
  them from the base, found by id in the file's own folder, then the weights search path.

No pickle anywhere: checkpoints for resuming training use the same container (see train.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ModelConfig
from .errors import UsageError, VQError
from .fileio import atomic_output, read_file
from .rate import check_quality
from .weightspath import (  # noqa: F401  (re-exported: the lookup lives in the torch-free weightspath)
    DEFAULT_WEIGHTS,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_PATH_ENV,
    default_weights_path,
    find_weights,
    is_model_name,
    locate_weights,
    model_id_in_metadata,
    parse_config,
    resolve_weights,
    shipped_dir,
    shipped_names,
    weights_search_path,
)

TRAINING_ONLY = ("ema_count", "ema_sum", "initialised", "ema_distortion")
STATS_PREFIX = "stats."
COUNT_DTYPES = "count_dtypes"
COUNT_DEFLATED = "count_deflated"
MAX_COUNTS = 1 << 28
"""The most entries a deflated count table may stand for (a bound before inflating)."""
BASE = "base_model"
_WIDE = {"int32": torch.int32, "int64": torch.int64}


@dataclass
class Weights:
    """A loaded model with what came with it."""

    model: Any  # VQVAE (imported lazily)
    config: ModelConfig
    model_id: str
    stats: dict[str, torch.Tensor]
    training: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    named_default: float | None = None  # the file's default_quality metadata, if any

    @property
    def histogram(self) -> torch.Tensor:
        return self.stats["histogram"]



def model_id_of(tensors: dict[str, torch.Tensor]) -> str:
    """A short hash of every tensor's name, dtype, shape and bytes (order independent)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def release_tensors(model: torch.nn.Module, stats: dict[str, torch.Tensor], half: bool = False) -> dict[str, torch.Tensor]:
    """The tensors a release file stores: inference state (optionally fp16) plus statistics."""
    out = {}
    for name, t in model.state_dict().items():
        if name.rsplit(".", 1)[-1] in TRAINING_ONLY:
            continue
        t = t.detach().cpu()
        out[name] = t.half() if half and t.is_floating_point() else t.float() if t.is_floating_point() else t
    for name, t in stats.items():
        out[STATS_PREFIX + name] = t.detach().cpu().contiguous()
    return out


def pack_counts(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Count tables stored compactly (they are most of a file's bytes): as uint16 where their
    counts fit, deflated where they do not; returns the tensors to store and the metadata entries
    that name what each packed table stands for."""
    out, dtypes, deflated = dict(tensors), {}, {}
    for k, t in tensors.items():
        wide = str(t.dtype).removeprefix("torch.")
        if not (k.startswith(STATS_PREFIX) and wide in _WIDE and t.numel() and int(t.min()) >= 0):
            continue
        if int(t.max()) < 1 << 16:
            out[k], dtypes[k] = t.to(torch.uint16), wide
        else:
            data = zlib.compress(t.contiguous().numpy().astype(f"<i{t.element_size()}").tobytes(), 9)
            out[k], deflated[k] = torch.frombuffer(bytearray(data), dtype=torch.uint8), {"dtype": wide, "shape": list(t.shape)}
    meta = {COUNT_DTYPES: json.dumps(dtypes, sort_keys=True)} if dtypes else {}
    if deflated:
        meta[COUNT_DEFLATED] = json.dumps(deflated, sort_keys=True)
    return out, meta


def unpack_counts(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> dict[str, torch.Tensor]:
    """The tensors a file stands for: its uint16 count tables widened to the dtypes that
    ``count_dtypes`` names and its deflated ones inflated as ``count_deflated`` says (files
    without them stored every table wide)."""
    try:
        dtypes = json.loads(meta.get(COUNT_DTYPES, "{}"))
        deflated = json.loads(meta.get(COUNT_DEFLATED, "{}"))
        assert isinstance(dtypes, dict) and isinstance(deflated, dict)
    except (ValueError, AssertionError):
        raise VQError(f"{path}: corrupt weights (bad {COUNT_DTYPES} or {COUNT_DEFLATED} in metadata)") from None
    out = dict(tensors)
    for k, t in tensors.items():
        if t.dtype == torch.uint16 and k not in dtypes:
            raise VQError(f"{path}: corrupt weights: {k} is uint16 and {COUNT_DTYPES} does not name its dtype")
    for k, wide in dtypes.items():
        if k not in tensors or tensors[k].dtype != torch.uint16 or wide not in _WIDE:
            raise VQError(f"{path}: corrupt weights ({COUNT_DTYPES} names {k!r} as {wide!r}: "
                          "expected a uint16 count table standing for int32 or int64)")
        out[k] = tensors[k].to(_WIDE[wide])
    for k, spec in deflated.items():
        out[k] = _inflated(path, k, tensors.get(k), spec)
    return out


def _inflated(path: Path, name: str, t: torch.Tensor | None, spec: Any) -> torch.Tensor:
    """A deflated count table, checked against what count_deflated says it stands for."""
    bad = f"{path}: corrupt weights ({COUNT_DEFLATED}: {name!r} "
    try:
        wide, shape = _WIDE[spec["dtype"]], [int(n) for n in spec["shape"]]
        assert all(n >= 0 for n in shape) and math.prod(shape) <= MAX_COUNTS
    except (KeyError, TypeError, ValueError, AssertionError):
        raise VQError(bad + f"has a bad entry {spec!r})") from None
    if t is None or t.dtype != torch.uint8 or t.dim() != 1:
        raise VQError(bad + "is not a deflated uint8 table)")
    size = math.prod(shape) * wide.itemsize
    inflate = zlib.decompressobj()
    try:  # at most the bytes it stands for: a deflated bomb stops there
        data = inflate.decompress(t.numpy().tobytes(), size + 1)
    except zlib.error as e:
        raise VQError(bad + f"does not inflate: {e})") from None
    if len(data) != size or not inflate.eof or inflate.unused_data:
        raise VQError(bad + f"inflates to other than {shape} {spec['dtype']})")
    return torch.from_numpy(np.frombuffer(data, dtype=f"<i{wide.itemsize}").astype(f"=i{wide.itemsize}")).reshape(shape)


def save_weights(path: Path | str, model: torch.nn.Module, config: ModelConfig, stats: dict[str, torch.Tensor],
                 training: dict[str, Any] | None = None, half: bool = False) -> str:
    """Write release weights atomically; returns the model id."""
    tensors = {k: v.contiguous() for k, v in release_tensors(model, stats, half).items()}
    mid = model_id_of(tensors)
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "config": config.to_json(),
            "model_id": mid, "training": json.dumps(training or {}, sort_keys=True)}
    write_packed(path, tensors, meta)
    return mid


def write_packed(path: Path | str, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> int:
    """Write a safetensors file atomically, its count tables packed (pack_counts) and the metadata
    naming them; returns its size in bytes. Base releases and enhancement layers alike."""
    from safetensors.torch import save

    stored, packing = pack_counts(tensors)
    data = save(stored, {**{k: v for k, v in meta.items() if k not in (COUNT_DTYPES, COUNT_DEFLATED)}, **packing})
    with atomic_output(path) as f:
        f.write(data)
    return len(data)


def _checked_model_id(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """The model id of the (unpacked) tensors; an error if the header records another."""
    mid = model_id_of(tensors)
    if meta.get("model_id") not in (None, mid):
        raise VQError(f"{path}: corrupt weights (model id {meta.get('model_id')} in the header, {mid} computed)")
    return mid


def compact_weights(path: Path | str, out: Path | str | None = None, base: Path | str | None = None
                    ) -> tuple[str, int, int]:
    """Rewrite a release with its count tables packed (pack_counts), written atomically to `out`
    (default: in place); with `base` (a complete release), the tensors equal to the base's are
    left out and the base named by its model id. The model id, every tensor the loader returns
    and so every file written with the release are unchanged. Returns the model id and the sizes
    before and after."""
    path = Path(path)
    tensors, meta, _ = read_release(path)
    mid = _checked_model_id(path, tensors, meta)
    meta = {k: v for k, v in meta.items() if k != BASE}
    if base is not None:
        base_tensors, meta[BASE] = _complete_release(Path(base))
        tensors = {k: v for k, v in tensors.items() if not _same_tensor(v, base_tensors.get(k))}
    before = path.stat().st_size
    return mid, before, write_packed(Path(out) if out is not None else path, tensors, meta)


def read_safetensors(path: Path, what: str = "vq weights") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, with one-line errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = read_file(path)
    try:
        tensors = load(data)
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError) as e:
        raise VQError(f"{path}: not {what} (not a valid safetensors file: {str(e).splitlines()[0]})") from None
    return tensors, meta


def _same_tensor(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    return b is not None and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def _read_stored(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], ModelConfig]:
    """The tensors one file stores (count tables unpacked), its metadata and config."""
    tensors, meta = read_safetensors(path)
    config = parse_config(path, meta)
    return unpack_counts(path, tensors, meta), meta, config


def _complete_release(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors and model id of a release that may serve as a base: one with no base itself
    (one level only: no chains, no cycles), its id checked."""
    tensors, meta, _ = _read_stored(path)
    if BASE in meta:
        raise VQError(f"{path}: not a complete release (it has a base itself)")
    return tensors, _checked_model_id(path, tensors, meta)


def read_release(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], ModelConfig]:
    """A release's tensors as it stands for them (count tables unpacked, a base's shared tensors
    filled in), metadata and config."""
    tensors, meta, config = _read_stored(path)
    if BASE in meta:
        folders = [path.parent, *weights_search_path()]
        found = locate_weights(meta[BASE], folders)
        if found is None:
            raise VQError(f"{path}: builds on model {meta[BASE]}, and no weights of that id were found "
                          f"(searched {', '.join(map(str, folders))})")
        tensors = {**_complete_release(found)[0], **tensors}
    return tensors, meta, config


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when available; an unavailable explicit device is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise VQError("device cuda: CUDA is not available on this machine", params=("device",))
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"device {device}: expected auto, cpu or cuda", params=("device",))
    return torch.device(device)


def check_tensors(path: Path, state: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                  strict_training: bool, values: bool = True) -> None:
    """Refuse tensors that do not fit a model's state dict (missing, unexpected, shape, kind of
    dtype) and, with `values`, that hold NaN or infinite values; statistics must be
    non-negative integers."""
    missing = [k for k in state if k not in tensors and (strict_training or k.rsplit(".", 1)[-1] not in TRAINING_ONLY)]
    if missing:
        raise VQError(f"{path}: weights do not match the model: missing {', '.join(missing[:3])}"
                      + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
    unexpected = [k for k in tensors if k not in state and not k.startswith(STATS_PREFIX)]
    if unexpected:
        raise VQError(f"{path}: weights do not match the model: unexpected tensor {unexpected[0]}")
    for k, t in tensors.items():
        if k in state and tuple(t.shape) != tuple(state[k].shape):
            raise VQError(f"{path}: weights do not match the model: {k} has shape {tuple(t.shape)}, "
                          f"expected {tuple(state[k].shape)}")
        want_float = state[k].is_floating_point() if k in state else False
        if k in state and (t.is_floating_point() != want_float or (t.dtype == torch.bool) != (state[k].dtype == torch.bool)):
            raise VQError(f"{path}: weights do not match the model: {k} is {t.dtype}, expected {state[k].dtype}")
        if not values or not t.numel():
            continue
        if k.startswith(STATS_PREFIX) and k != STATS_PREFIX + "code_distance":
            if t.is_floating_point() or t.dtype == torch.bool:
                raise VQError(f"{path}: corrupt weights: {k} is {t.dtype}, expected integer counts")
            if int(t.min()) < 0:
                raise VQError(f"{path}: corrupt weights: {k} holds negative counts")
        if t.is_floating_point() and not math.isfinite(float(t.float().abs().max())):  # max propagates NaN
            raise VQError(f"{path}: corrupt weights: {k} holds NaN or infinite values")


def load_state(path: Path, model: torch.nn.Module, tensors: dict[str, torch.Tensor], strict_training: bool) -> None:
    """Copy tensors into the model, naming any missing, mis-shaped or non-finite one."""
    state = model.state_dict()
    check_tensors(path, state, tensors, strict_training)
    with torch.no_grad():
        for k, v in state.items():
            if k in tensors:
                v.copy_(tensors[k].to(v.dtype))
            elif k.endswith("initialised"):
                v.fill_(True)


def load_weights(path: Path | str | None = None, device: str | torch.device = "cpu") -> Weights:
    """Load release weights onto a device (fp16-stored tensors are widened to fp32)."""
    from .model import VQVAE

    path = resolve_weights(path)
    if not path.exists():
        hint = (" (the shipped weights are missing: pass a weights file)" if path == default_weights_path() else
                f" (nor a shipped model: {', '.join(shipped_names())})" if is_model_name(path) else "")
        raise VQError(f"{path}: no such file{hint}")
    tensors, meta, config = read_release(path)
    dev = resolve_device(device) if isinstance(device, str) else device
    with torch.device("meta"):  # shapes only: a config that lies about the tensors allocates nothing
        shapes = VQVAE(config).state_dict()
    check_tensors(path, shapes, tensors, strict_training=False, values=False)
    model = VQVAE(config)
    load_state(path, model, tensors, strict_training=False)
    stats = {k[len(STATS_PREFIX):]: v for k, v in tensors.items() if k.startswith(STATS_PREFIX)}
    hist = stats.get("histogram")
    if hist is None or tuple(hist.shape) != (config.stages, config.codebook_size):
        raise VQError(f"{path}: weights do not match the model: stats.histogram missing or not "
                      f"[{config.stages}, {config.codebook_size}]")
    mid = _checked_model_id(path, tensors, meta)
    try:
        training = json.loads(meta.get("training", "{}"))
    except ValueError:
        training = {}
    default = meta.get("default_quality")
    if default is not None:
        try:
            default = float(default)
            check_quality(default)
        except (ValueError, VQError):
            raise VQError(f"{path}: bad default_quality {meta['default_quality']!r} in metadata "
                          f"(expected 0 to 100)") from None
    model.to(dev).eval()
    return Weights(model, config, mid, stats, training, path, default)


def set_default_quality(path: Path | str, quality: float, out: Path | str | None = None) -> None:
    """Record the default rate (a quality, 0..100) in a weights file's metadata; tensors and model
    id are kept. Written atomically to `out` (default: in place)."""
    from safetensors.torch import save

    path = Path(path)
    tensors, meta = read_safetensors(path)
    parse_config(path, meta)
    check_quality(quality)
    with atomic_output(Path(out) if out is not None else path) as f:
        f.write(save(tensors, metadata={**meta, "default_quality": f"{quality:g}"}))
