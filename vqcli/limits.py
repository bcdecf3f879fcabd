"""Resource limits applied to untrusted inputs: the one place for them (no torch import).

MAX_SIDE is a property of the .vqz format (latent grid sides are u16 and a side is at most
65535 pixels); MAX_PIXELS is the default of `--max-pixels`, the policy bound on the images vq
will read, compress or decode (like Pillow's decompression-bomb guard, which is 89 MP).
"""

from __future__ import annotations

from .errors import UsageError, VQError

MAX_SIDE = 65535
MAX_PIXELS = 200_000_000


def check_size(width: int, height: int, name: str, max_pixels: int | None = MAX_PIXELS) -> None:
    """Refuse an image of absurd sides or more than max_pixels pixels (None: no pixel limit),
    before anything of its size is allocated."""
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise VQError(f"{name}: image is {width}x{height}, outside 1 to {MAX_SIDE} pixels per side")
    if max_pixels is not None and width * height > max_pixels:
        raise VQError(f"{name}: image is {width}x{height} ({width * height:,} pixels), over the "
                      f"{max_pixels:,} pixel limit (max_pixels)", params=("max_pixels",))


def check_max_pixels(max_pixels: int | None) -> int | None:
    """Validate a max_pixels value (usage error when not positive)."""
    if max_pixels is not None and max_pixels < 1:
        raise UsageError(f"max_pixels {max_pixels}: must be positive", params=("max_pixels",))
    return max_pixels
