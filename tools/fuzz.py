"""A structure-aware mutation fuzzer for `vq decompress` (.vqz files) and vq's image reader.

.vqz cases start from valid files coded with the committed tiny weights (every colour mode,
both entropy models, several sizes and stage counts) and mutate them: bit flips, byte runs,
truncation, insertion and deletion, header fields set to extremes (with the latent grid made
consistent or not), and chunk surgery (drop, duplicate, swap, retype, lengths, payloads replaced,
emptied, cut to words, spliced from another file, a surplus word below the ANS stack). Each
case's checksums are left stale or recomputed (header and every chunk), so that mutations get
past the CRCs. Each case runs in-process through the CLI's own per-file path (read, header,
pixel limit, entropy decode, model decode, PNG encode, atomic write) and is classified:

    ok        decoded; the output exists
    error     a clean VQError: one line naming the file, no output, no temp file
    crash     any other exception, or an error message that is not one line naming the file
    hang      over the time bound (a timer interrupts the case)
    memory    over the memory bound (tracemalloc peak: numpy and Python allocations; or the
              process's peak RSS growing by more than the bound; or MemoryError)
    leftover  a failed case left its output or a temp file behind

Image cases mutate PNG, JPEG, TIFF, WebP, GIF and BMP files (several modes, EXIF) and read them
with vqcli.images.decode_image; besides the classes above, `warning` counts any Python warning
that escaped it and `stderr` any byte written to file descriptor 2 (a C library's message).

Usage: python tools/fuzz.py [--cases N] [--images N] [--seed S] [--time-limit SEC] [--memory-mb MB]
Prints a report and a last summary line; exits 1 on any misbehaviour.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import tracemalloc
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TINY = ROOT / "tests" / "golden" / "tiny.safetensors"
BAD = ("crash", "hang", "memory", "leftover", "warning", "stderr")

from vqcli import format as vqz  # noqa: E402
from vqcli.errors import VQError  # noqa: E402

HEADER_FIELDS = {  # name: (offset, struct format)
    "version": (8, "B"), "mode": (9, "B"), "entropy": (10, "B"), "factor": (11, "B"), "model_stages": (12, "B"),
    "stages": (13, "B"), "width": (14, "I"), "height": (18, "I"), "grid_w": (22, "H"), "grid_h": (24, "H"),
    "codebook": (26, "H"), "reserved": (36, "H"),
}


class Hang(BaseException):
    """Raised by the timer inside a case that runs past the time bound."""


# -- valid seed files ----------------------------------------------------------------------------
def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    img = np.stack([128 + 90 * np.sin(xx * rng.uniform(0.02, 0.2) + c) * np.cos(yy * rng.uniform(0.02, 0.2))
                    for c in range(3)], axis=2)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def vqz_seeds(weights) -> list[bytes]:
    """Valid files: every colour mode, both entropy models, assorted sizes, stage counts, stage maps,
    flat cells and padded stages."""
    from vqcli.codec import compress, pack
    from vqcli.images import LoadedImage

    out = []
    sizes = [(8, 8), (24, 40), (33, 57), (48, 64), (1, 30), (70, 9)]
    for i, (h, w) in enumerate(sizes):
        for mode in ("RGB", "RGBA", "L", "LA"):
            rgb = smooth_image(h, w, i)
            if mode in ("L", "LA"):
                rgb = np.repeat(rgb.mean(2).astype(np.uint8)[:, :, None], 3, axis=2)
            alpha = np.linspace(0, 255, h * w).reshape(h, w).astype(np.uint8) if mode.endswith("A") else None
            for entropy in ("static", "context"):
                stages = 1 + (i + len(out)) % weights.config.stages
                out.append(compress(weights, LoadedImage(rgb, alpha, mode), stages=stages, entropy=entropy).data)
                # and a stage map (format 2), at a quality that varies with the case
                out.append(compress(weights, LoadedImage(rgb, alpha, mode), quality=(17 * len(out)) % 101,
                                    entropy=entropy).data)
    # format 3: flat regions (flat cells, some holding no index) and padded stages (runs of code 0)
    for i, (h, w) in enumerate([(1, 1), (8, 8), (40, 64), (33, 57)]):
        rgb = smooth_image(h, w, 10 + i)
        rgb[:, :max(1, w // 2)] = (200, 100, 50)
        out.append(compress(weights, LoadedImage(rgb, None, "RGB"), quality=(29 * i) % 101).data)
    f, stages = weights.config.downsample, weights.config.stages
    out.append(pack(weights, np.zeros((stages, 30, 40), dtype=np.int64), 40 * f, 30 * f, entropy="static"))
    # format 4: an enhancement layer (the caller puts one for these weights on the search path)
    for i, (h, w) in enumerate([(8, 8), (33, 57), (48, 64)]):
        rgb = smooth_image(h, w, 20 + i)
        rgb[:h // 3, :w // 3] = (10, 20, 30)
        out.append(compress(weights, LoadedImage(rgb, None, "RGB"), quality=100 - 17 * i).data)
    return out


def small_layer(folder: Path, base_id: str) -> None:
    """An untrained enhancement layer over base_id (for format-4 seeds), written into folder: the
    shipped layer's kind of contexts (four passes, a predictor), so that mutated chunks go through them."""
    import torch

    from vqcli.enhance import EnhanceConfig, Enhancement
    from vqcli.enhancecoding import save_enhancement

    cfg = EnhanceConfig(channels=4, width=8, levels=3, radius=7, same_channel=True, four_passes=True, predictor=True)
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, (cfg.levels, cfg.channels, cfg.contexts, cfg.alphabet))
    counts[..., cfg.radius] += 2000
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = Enhancement(cfg)
        net.predictor.copy_(torch.from_numpy(rng.integers(-1000, 3000, net.predictor.shape)))
        save_enhancement(folder / "layer.safetensors", net, counts, base_id, {"fuzz": True})


# -- mutations -----------------------------------------------------------------------------------
@dataclass
class Chunk:
    kind: int
    index: int
    length: int  # the declared length (may lie after mutation)
    payload: bytes


def split(data: bytes) -> tuple[bytes, list[Chunk], bytes]:
    """(header, chunks, trailing bytes) by the declared lengths, as far as they parse."""
    head, pos, chunks = data[:vqz.HEADER_SIZE], vqz.HEADER_SIZE, []
    while pos + vqz.CHUNK_HEAD_SIZE <= len(data):
        kind, index, length, _ = struct.unpack_from("<BBII", data, pos)
        start = pos + vqz.CHUNK_HEAD_SIZE
        if start + length > len(data):
            break
        chunks.append(Chunk(kind, index, length, data[start:start + length]))
        pos = start + length
    return head, chunks, data[pos:]


def join(head: bytes, chunks: list[Chunk], tail: bytes, fix_crcs: bool, old: bytes | None = None) -> bytes:
    """Reassemble; with fix_crcs every CRC is recomputed, else the old ones are kept where the
    chunk is unchanged (a stale CRC elsewhere)."""
    head = bytearray(head)
    if fix_crcs and len(head) >= vqz.HEADER_SIZE:
        n = vqz.HEADER_SIZE - 4
        head[n:n + 4] = struct.pack("<I", zlib.crc32(bytes(head[:n])))
    parts = [bytes(head)]
    for c in chunks:
        h6 = struct.pack("<BBI", c.kind, c.index, c.length)
        crc = zlib.crc32(c.payload, zlib.crc32(h6)) if fix_crcs else zlib.crc32(c.payload[:-1] or b"x")
        parts.append(h6 + struct.pack("<I", crc) + c.payload)
    return b"".join(parts) + tail


def fix_all_crcs(data: bytes) -> bytes:
    head, chunks, tail = split(data)
    return join(head, chunks, tail, True)


def extreme(rng: random.Random, fmt: str) -> int:
    top = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF}[fmt]
    return rng.choice([0, 1, 2, 3, 4, 7, 8, 16, 255, top, top - 1, top // 2 + 1, rng.randint(0, top),
                       65535, 65536, 4096, 10000, 1525]) & top


def m_bitflip(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def m_bytes(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    i = rng.randrange(len(b))
    n = rng.choice([1, 2, 4, 8])
    b[i:i + n] = bytes([rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])] * n)
    return bytes(b)


def m_truncate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    return data[:rng.randrange(len(data))]


def m_insert_delete(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    i = rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        return data[:i] + bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 16]))) + data[i:]
    return data[:i] + data[i + rng.choice([1, 4, 16]):]


def m_header(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3])):
        off, fmt = HEADER_FIELDS[rng.choice(list(HEADER_FIELDS))]
        struct.pack_into("<" + fmt, b, off, extreme(rng, fmt))
    if rng.random() < 0.6:  # keep the latent grid consistent so that the header check passes
        f = b[11] or 1
        w, h = struct.unpack_from("<II", b, 14)
        struct.pack_into("<HH", b, 22, min(0xFFFF, -(-w // f)), min(0xFFFF, -(-h // f)))
    return bytes(b)


def m_chunks(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    head, chunks, tail = split(data)
    if not chunks:
        return m_bitflip(data, rng, pool)
    op = rng.choice(["drop", "dup", "swap", "retype", "length", "random", "empty", "words", "splice", "surplus",
                     "zeros", "stages"])
    i = rng.randrange(len(chunks))
    c = chunks[i]
    if op == "drop":
        del chunks[i]
    elif op == "dup":
        chunks.insert(i, Chunk(c.kind, c.index, c.length, c.payload))
    elif op == "swap" and len(chunks) > 1:
        j = rng.randrange(len(chunks))
        chunks[i], chunks[j] = chunks[j], chunks[i]
    elif op == "retype":
        c.kind, c.index = rng.choice([(ord("A"), 0), (ord("F"), 0), (ord("M"), 0), (ord("S"), rng.randrange(4)),
                                      (ord("P"), rng.randrange(4)), (rng.randrange(256), 0)])
    elif op == "length":
        c.length = max(0, rng.choice([0, c.length + 1, c.length - 1, c.length + 4, 0xFFFFFFFF, 2 ** 31]))
        return join(head, chunks, tail, rng.random() < 0.7)[:len(data) + 64]
    elif op == "random":
        c.payload = bytes(rng.randrange(256) for _ in range(rng.choice([4, 8, len(c.payload), 64])))
    elif op == "empty":
        c.payload = b""
    elif op == "words":
        c.payload = c.payload[:4 * rng.randrange(len(c.payload) // 4 + 1)]
    elif op == "splice":
        other = split(rng.choice(pool))[1]
        if other:
            c.payload = rng.choice(other).payload
    elif op == "surplus":
        c.payload = struct.pack("<I", rng.randrange(1, 2 ** 32)) + c.payload
    elif op == "zeros":
        c.payload = bytes(len(c.payload))
    elif op == "stages":
        hb = bytearray(head)
        hb[13] = rng.choice([1, 2, 3, 4, 255])
        head = bytes(hb)
    if op != "length":
        c.length = len(c.payload)
    return join(head, chunks, tail, True)


VQZ_MUTATORS = {"bitflip": m_bitflip, "bytes": m_bytes, "truncate": m_truncate, "insert_delete": m_insert_delete,
                "header": m_header, "chunks": m_chunks}


# -- running cases --------------------------------------------------------------------------------
@dataclass
class Report:
    kind: str
    cases: int = 0
    outcomes: Counter = field(default_factory=Counter)
    by_mutator: dict[str, Counter] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    max_seconds: float = 0.0
    max_mb: float = 0.0
    seconds: float = 0.0

    def add(self, mutator: str, outcome: str, dt: float, mb: float, detail: str) -> None:
        self.cases += 1
        self.outcomes[outcome] += 1
        self.by_mutator.setdefault(mutator, Counter())[outcome] += 1
        self.max_seconds, self.max_mb = max(self.max_seconds, dt), max(self.max_mb, mb)
        if outcome in BAD and len(self.examples.setdefault(outcome, [])) < 5:
            self.examples[outcome].append(detail)

    @property
    def bad(self) -> int:
        return sum(self.outcomes[b] for b in BAD)

    def summary(self) -> str:
        counts = ", ".join(f"{k} {self.outcomes[k]}" for k in ("ok", "error", *BAD) if k in self.outcomes or k in BAD)
        return (f"{self.kind}: {self.cases} cases, {counts}; slowest {self.max_seconds:.3f} s, "
                f"peak {self.max_mb:.1f} MB traced, {self.seconds:.0f} s in all")

    def lines(self) -> list[str]:
        out = [self.summary()]
        for m, c in sorted(self.by_mutator.items()):
            out.append(f"  {m:14s} " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
        for k, ex in self.examples.items():
            out += [f"  {k}: {e}" for e in ex]
        return out


@contextlib.contextmanager
def bounded(seconds: float):
    """Interrupt the body with Hang after `seconds` (a real-time timer; the main thread only)."""
    def on_alarm(signum, frame):
        raise Hang

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(fn, time_limit: float, memory_mb: float, rss_base: float) -> tuple[str, float, float, str]:
    """(outcome, seconds, traced peak MB, detail) of fn(), which returns None or raises."""
    tracemalloc.reset_peak()
    t = time.perf_counter()
    detail = ""
    try:
        with bounded(time_limit):
            fn()
        outcome = "ok"
    except Hang:
        outcome, detail = "hang", f"over {time_limit} s"
    except VQError as e:
        outcome, detail = "error", str(e)
    except MemoryError:
        outcome, detail = "memory", "MemoryError"
    except Exception as e:  # noqa: BLE001 - the point of a fuzzer
        outcome, detail = "crash", f"{type(e).__name__}: {e}"
    dt = time.perf_counter() - t
    mb = tracemalloc.get_traced_memory()[1] / 2 ** 20
    if outcome != "hang" and (mb > memory_mb or _peak_rss_mb() > rss_base + memory_mb):
        outcome, detail = "memory", f"{mb:.0f} MB traced, peak RSS {_peak_rss_mb():.0f} MB"
    return outcome, dt, mb, detail


def fuzz_vqz(cases: int, seed: int, time_limit: float = 5.0, memory_mb: float = 300.0,
             progress: bool = False) -> Report:
    """Mutated .vqz files through the CLI's per-file decompress path."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `make fuzz` runs it (OMP_NUM_THREADS=1); restored below for callers in-process
    try:
        return _fuzz_vqz(cases, seed, time_limit, memory_mb, progress)
    finally:
        torch.set_num_threads(threads)


def _fuzz_vqz(cases: int, seed: int, time_limit: float, memory_mb: float, progress: bool) -> Report:
    from vqcli.weights import load_weights
    from vqcli.weightspath import WEIGHTS_PATH_ENV

    weights = load_weights(TINY, "cpu")
    layer_dir = tempfile.TemporaryDirectory()
    small_layer(Path(layer_dir.name), weights.model_id)
    old_path = os.environ.get(WEIGHTS_PATH_ENV)
    os.environ[WEIGHTS_PATH_ENV] = layer_dir.name
    try:
        return _fuzz_pool(weights, vqz_seeds(weights), cases, seed, time_limit, memory_mb, progress)
    finally:
        if old_path is None:
            os.environ.pop(WEIGHTS_PATH_ENV, None)
        else:
            os.environ[WEIGHTS_PATH_ENV] = old_path
        layer_dir.cleanup()


def _fuzz_pool(weights, pool: list[bytes], cases: int, seed: int, time_limit: float, memory_mb: float,
               progress: bool) -> Report:
    from vqcli.batch import Job
    from vqcli.codecli import decompress_one

    rng = random.Random(seed)
    report = Report(".vqz")
    start = time.perf_counter()
    rss_base = _peak_rss_mb()
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        d = Path(tmp)
        src, dst = d / "case.vqz", d / "case.png"
        for case in range(cases):
            base = rng.choice(pool)
            name = rng.choice(list(VQZ_MUTATORS))
            data = VQZ_MUTATORS[name](base, rng, pool)
            if rng.random() < 0.5 and name in ("bitflip", "bytes", "header", "insert_delete"):
                data = fix_all_crcs(data)
                name += "+crc"
            src.write_bytes(data)
            outcome, dt, mb, detail = run_case(
                lambda: decompress_one(lambda model_id, n: weights, Job(str(src), str(dst)), None, True),
                time_limit, memory_mb, rss_base)
            if outcome == "error" and ("\n" in detail or not detail.startswith(f"{src}: ")):
                outcome = "crash"
                detail = f"not one line naming the file: {detail!r}"
            left = sorted(p.name for p in d.iterdir() if p.name != src.name and (outcome != "ok" or p != dst))
            if outcome == "ok" and not dst.exists():
                outcome, detail = "crash", "exit 0 without an output"
            elif left:
                outcome, detail = ("leftover", f"left {left}") if outcome in ("ok", "error") else (outcome, detail)
            for p in d.iterdir():
                if p != src:
                    p.unlink()
            report.add(name, outcome, dt, mb, f"case {case} (seed {seed}, {name}, {len(data)} bytes): {detail}")
            if progress and case % 5000 == 4999:
                print(f"  {case + 1} cases ... {report.summary()}", file=sys.__stderr__, flush=True)
    tracemalloc.stop()
    report.seconds = time.perf_counter() - start
    return report


# -- image inputs ---------------------------------------------------------------------------------
def image_seeds() -> list[tuple[str, bytes]]:
    from PIL import Image

    rgb = smooth_image(24, 32, 1)
    ims = {"RGB": Image.fromarray(rgb), "RGBA": Image.fromarray(np.dstack([rgb, rgb[..., 0]]), "RGBA"),
           "L": Image.fromarray(rgb[..., 1]), "P": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)}
    exif = Image.Exif()
    exif[0x0112] = 6
    out = []
    for fmt, modes, opts in [("PNG", ("RGB", "RGBA", "L", "P"), {}), ("JPEG", ("RGB", "L"), {"exif": exif.tobytes()}),
                             ("TIFF", ("RGB", "RGBA", "L", "P"), {}), ("WEBP", ("RGB", "RGBA"), {}),
                             ("GIF", ("P", "L"), {}), ("BMP", ("RGB", "L", "P"), {})]:
        for m in modes:
            buf = io.BytesIO()
            ims[m].save(buf, fmt, **opts)
            out.append((f"{fmt}-{m}", buf.getvalue()))
    for mode, arr in (("I;16", (rgb[..., 0].astype(np.uint16) * 257)), ("F", rgb[..., 0].astype(np.float32))):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "TIFF")
        out.append((f"TIFF-{mode}", buf.getvalue()))
    buf = io.BytesIO()
    ims["RGB"].save(buf, "TIFF", compression="tiff_deflate")
    out.append(("TIFF-deflate", buf.getvalue()))
    return out


def m_png_ihdr(data: bytes, rng: random.Random, pool) -> bytes:
    """A PNG's declared size at extremes, its IHDR CRC recomputed (the damaged-header case)."""
    if not data.startswith(b"\x89PNG"):
        return m_bitflip(data, rng, pool)
    b = bytearray(data)
    struct.pack_into(">II", b, 16, extreme(rng, "I") % 2 ** 31, extreme(rng, "I") % 2 ** 31)
    struct.pack_into(">I", b, 29, zlib.crc32(bytes(b[12:29])))
    return bytes(b)


IMAGE_MUTATORS = {"bitflip": m_bitflip, "bytes": m_bytes, "truncate": m_truncate, "insert_delete": m_insert_delete,
                  "png_ihdr": m_png_ihdr}


@contextlib.contextmanager
def captured_fd2():
    """Collect what C code writes to file descriptor 2 (Python's sys.stderr is separate)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        out = {"text": b""}
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            out["text"] = f.read()


def fuzz_images(cases: int, seed: int, time_limit: float = 5.0, memory_mb: float = 300.0) -> Report:
    """Mutated images through vqcli.images.decode_image: one clean error or an image, nothing else."""
    from vqcli.images import decode_image

    seeds = image_seeds()
    rng = random.Random(seed)
    report = Report("images")
    start = time.perf_counter()
    rss_base = _peak_rss_mb()
    tracemalloc.start()
    for case in range(cases):
        kind, base = rng.choice(seeds)
        name = rng.choice(list(IMAGE_MUTATORS))
        data = IMAGE_MUTATORS[name](base, rng, None)
        with captured_fd2() as fd2, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outcome, dt, mb, detail = run_case(functools.partial(decode_image, data, "case.img"), time_limit,
                                               memory_mb, rss_base)
        if outcome == "error" and ("\n" in detail or not detail.startswith("case.img: ")):
            outcome, detail = "crash", f"not one line naming the file: {detail!r}"
        if caught and outcome in ("ok", "error"):
            outcome, detail = "warning", f"{caught[0].category.__name__}: {caught[0].message}"
        if fd2["text"] and outcome in ("ok", "error"):
            outcome, detail = "stderr", repr(fd2["text"][:200])
        report.add(f"{kind.split('-')[0]}/{name}", outcome, dt, mb, f"case {case} (seed {seed}, {kind}, {name}): {detail}")
    tracemalloc.stop()
    report.seconds = time.perf_counter() - start
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000, help=".vqz cases")
    ap.add_argument("--images", type=int, default=2000, help="image-reader cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=5.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--memory-mb", type=float, default=300.0, help="MB per case before it counts as a blowup")
    args = ap.parse_args()
    reports = []
    if args.images:
        reports.append(fuzz_images(args.images, args.seed, args.time_limit, args.memory_mb))
        print("\n".join(reports[-1].lines()), flush=True)
    if args.cases:
        reports.append(fuzz_vqz(args.cases, args.seed, args.time_limit, args.memory_mb, progress=True))
        print("\n".join(reports[-1].lines()), flush=True)
    bad = sum(r.bad for r in reports)
    print(f"fuzz summary (seed {args.seed}): " + " | ".join(r.summary() for r in reports)
          + f" => {'OK: no misbehaviour' if not bad else f'{bad} MISBEHAVIOURS'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
