"""A Pillow plugin for .vqz files, registered by `import vqcli` (or vqcli.register_pillow()).

    Image.open("photo.vqz")                 # reads the 42-byte header: size and mode
    im.load()                               # decodes (the model loads here, on first use)
    im.save("photo.vqz", quality=60)        # or bpp=, psnr=, stages=, effort=, weights=, device=

Opening reads only the header, so `Image.open(...).size` costs no model; pixels are decoded on
load() by a Pillow decoder that reads the whole file and decodes it with vqcli.decompress (the
model found from the model id in the header). Saving goes through vqcli.compress.

quality is vq's own quality (0-100, vqcli.compress), so code written against JPEG-style options
works; like JPEG's, the numbers are not comparable across codecs.
"""

from __future__ import annotations

from typing import IO

from PIL import Image, ImageFile

from . import format as vqz
from .errors import VQError

FORMAT = "VQZ"
EXTENSION = ".vqz"
MIME = "image/x-vqz"
SAVE_OPTIONS = ("stages", "bpp", "psnr", "quality", "effort", "weights", "device")


def _accept(prefix: bytes) -> bool:
    return prefix.startswith(vqz.MAGIC)


class VqzImageFile(ImageFile.ImageFile):
    """A .vqz file: size and mode from its header; pixels decoded on load()."""

    format = FORMAT
    format_description = "vq learned image codec"

    def _open(self) -> None:
        name = str(getattr(self, "filename", "") or "<vqz>")
        try:
            header = vqz.read_header(self.fp.read(vqz.HEADER_SIZE), name)
        except VQError as e:
            raise SyntaxError(str(e)) from None  # Pillow's "not (a valid) this format"
        self._size = (header.width, header.height)
        self._mode = header.mode
        self.info.update(model_id=header.model_id, stages=header.stages, model_stages=header.model_stages,
                         entropy_model=header.entropy)
        self.tile = [ImageFile._Tile("vqz", (0, 0, *self._size), 0, name)]


class VqzDecoder(ImageFile.PyDecoder):
    """Reads the whole file and decodes it in one go (the stages depend on one another)."""

    _pulls_fd = True

    def decode(self, buffer: bytes | Image.SupportsArrayInterface) -> tuple[int, int]:
        from .api import decompress

        assert self.fd is not None
        self.fd.seek(0)
        name = self.args[0] if self.args else "<vqz>"
        try:
            im = decompress(self.fd.read())
        except VQError as e:
            raise OSError(str(e).replace("<bytes>", str(name), 1)) from None
        if im.mode != self.mode or im.size != self.state.extents()[2:]:
            raise OSError(f"{name}: decoded {im.mode} {im.size}, the header says {self.mode}")
        self.set_as_raw(im.tobytes(), im.mode)
        return -1, 0


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    from .api import compress

    fp.write(compress(im, **{k: im.encoderinfo.get(k) for k in SAVE_OPTIONS}))


def register() -> None:
    """Teach Pillow the format: open, save, the .vqz extension and a MIME type."""
    Image.register_open(FORMAT, VqzImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME)
    Image.register_decoder("vqz", VqzDecoder)
