"""Matrix/TRC ICC v2 display profiles built in the test (no profile files in the repository)."""

from __future__ import annotations

import struct

D50 = (0.9642, 1.0, 0.8249)
# D50-adapted primaries (the rXYZ, gXYZ, bXYZ tags of the published profiles) and a gamma.
ADOBE_RGB = ("Adobe RGB (1998)", ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446)), 2.2)
DISPLAY_P3 = ("Display P3", ((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841)), 2.2)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(v) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(c) for c in v)


def _desc(text: str) -> bytes:
    a = text.encode("ascii") + b"\0"
    return b"desc\0\0\0\0" + struct.pack(">I", len(a)) + a + b"\0" * 4 + b"\0" * 4 + b"\0" * 2 + b"\0" + b"\0" * 67


def profile(spec) -> bytes:
    """ICC bytes for (description, (rXYZ, gXYZ, bXYZ), gamma)."""
    name, prims, gamma = spec
    curv = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [(b"desc", _desc(name)), (b"wtpt", _xyz(D50)), (b"rXYZ", _xyz(prims[0])), (b"gXYZ", _xyz(prims[1])),
            (b"bXYZ", _xyz(prims[2])), (b"rTRC", curv), (b"gTRC", curv), (b"bTRC", curv), (b"cprt", b"text\0\0\0\0none\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 4 + b"\0" * 4 + b"\0" * 8 + b"\0" * 8 + b"\0" * 4 + b"".join(_s15(c) for c in D50)
              + b"\0" * 4 + b"\0" * 16 + b"\0" * 28)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body
