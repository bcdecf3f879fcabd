"""vq: learned image compression with a residual-VQ autoencoder.

    import vqcli
    data = vqcli.compress("photo.png", quality=45) # .vqz bytes
    image = vqcli.decompress(data)                 # a PIL image

The API (docs/API.md) is imported lazily (PEP 562), so `import vqcli` stays fast and loads no
torch until a model is needed. It registers a Pillow plugin: Image.open("x.vqz") decodes and
im.save("x.vqz", quality=45) encodes (vqcli.pillow_plugin). Submodules: vqcli.model (VQVAE), vqcli.weights, vqcli.codec
(bytes API with every detail), vqcli.train.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "compress", "decompress", "info", "load_model", "register_pillow"]

_LAZY = {"compress": "api", "decompress": "api", "info": "api", "load_model": "api"}


def register_pillow() -> None:
    """Register the .vqz Pillow plugin (done by `import vqcli`; again is harmless)."""
    from .pillow_plugin import register

    register()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# Image.open("x.vqz") works after `import vqcli`: the plugin needs only Pillow and vqcli.format;
# the model (and torch) load when a file is actually decoded.
register_pillow()
