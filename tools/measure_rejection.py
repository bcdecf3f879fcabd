"""What hostile inputs cost vq to refuse: bytes, seconds and memory for crafted small files
(a .vqz announcing a huge image over a few bytes of payload, random payloads, a PNG whose header
claims 32 x 2,097,176 pixels), with the shipped weights.

Usage: PYTHONPATH=. python tools/measure_rejection.py
Memory: tracemalloc's peak (numpy and Python allocations) and the growth of the process's peak
RSS. The first case also builds the weights' entropy tables (once per model, as any first file does).
"""

from __future__ import annotations

import io
import resource
import struct
import time
import tracemalloc
import zlib

import numpy as np
from PIL import Image

from vqcli import format as vqz
from vqcli.codec import decompress
from vqcli.errors import VQError
from vqcli.images import decode_image
from vqcli.weights import load_weights


def main() -> None:
    w = load_weights()
    cfg = w.config
    rng = np.random.default_rng(0)

    def vqz_file(width: int, height: int, payload: bytes, entropy: str = "context") -> bytes:
        return vqz.write(vqz.Header(width, height, "RGB", w.model_id, cfg.downsample, cfg.stages, 1,
                                    cfg.codebook_size, entropy), [payload])

    def words(n: int) -> bytes:
        return rng.integers(1, 2 ** 32, n, dtype=np.uint32).tobytes()

    png = io.BytesIO()
    Image.new("P", (32, 32)).save(png, "PNG")
    tall = bytearray(png.getvalue())
    struct.pack_into(">II", tall, 16, 32, 2_097_176)
    struct.pack_into(">I", tall, 29, zlib.crc32(bytes(tall[12:29])))
    cases = [("4096x10000 (40 MP), 0-byte stage", vqz_file(4096, 10000, b"")),
             ("4096x10000, 4-byte stage", vqz_file(4096, 10000, b"\x01\0\0\0")),
             ("4096x10000, 4-byte stage, static", vqz_file(4096, 10000, b"\xff\xff\xff\xff", "static")),
             ("65535x1525 (100 MP), 4-byte stage", vqz_file(65535, 1525, b"\x07\0\0\0")),
             ("4096x10000, 948 random bytes", vqz_file(4096, 10000, words(237))),
             ("720x720, 948 random bytes", vqz_file(720, 720, words(237))),
             ("palette PNG 32x2097176", bytes(tall))]
    print(f"{'case':36s} {'bytes':>5s} {'seconds':>8s} {'traced MB':>9s} {'RSS+ MB':>8s}  result")
    for label, data in cases:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        t = time.perf_counter()
        try:
            if label.startswith("palette"):
                decode_image(data, "f")
            else:
                decompress(w, data, name="f")
            result = "DECODED"
        except VQError as e:
            result = str(e)
        dt = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
        print(f"{label:36s} {len(data):5d} {dt:8.4f} {peak:9.2f} {grown:8.1f}  {result}")


if __name__ == "__main__":
    main()
