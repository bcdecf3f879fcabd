"""The .vqz container: the one place that knows its byte layout (see docs/FORMAT.md).

No torch import, so `vq info` is instant. All integers are little-endian.

    header (42 bytes, fixed):
        magic        8   b"\\x89VQZ\\r\\n\\x1a\\n" (PNG-style: catches text-mode mangling)
        version      u8  1: every position keeps the same stages; 2: a stage map chunk follows;
                         3: a flat-cell chunk too, and stage chunks may be padded;
                         4: an enhancement chunk follows the stages
        mode         u8  0 RGB, 1 RGBA, 2 L (grey), 3 LA  (alpha modes carry an alpha chunk)
        entropy      u8  entropy model of the stage chunks (0 static prior, 1 context model, 2 spatial)
        factor       u8  model downsampling factor f
        model_stages u8  S of the model
        stages       u8  stage chunks stored (1..S)
        width        u32 image width in pixels
        height       u32 image height in pixels
        grid_w       u16 latent grid width  = ceil(width / f)
        grid_h       u16 latent grid height = ceil(height / f)
        codebook     u16 K, codes per stage
        model_id     8   the weights' model id (16 hex chars as 8 raw bytes)
        reserved     2   zero
        header_crc   u32 CRC32 of the 38 bytes before it
    then chunks, each:  type u8 (b"A" alpha, b"F" flat cells, b"M" stage map, b"S" stage, b"P"
    padded stage, b"E" enhancement), index u8, length u32, crc u32 (CRC32 of type, index, length and payload),
    payload.  The alpha chunk (zlib of the H*W alpha plane, lossless) comes first, then in
    version 3 the flat cells (vqcli.flatcells), in versions 2 and 3 the stage map (how many
    stages each block of latent cells keeps: vqcli.stagemap), then the stage chunks in stage
    order, so that a file cut at a chunk boundary after stage k still holds a decodable stage-k
    image. A padded stage chunk (version 3) is a stage's stream, zero bytes, and the stream's
    length (u32): how a writer meets the readers' lower bound on a payload's size without
    changing what it codes. Version 4 ends with an enhancement chunk (vqcli.enhancecoding): the
    layer's model id (8 bytes), its level (u16, fixed point), the symbol stream's length (u32), the
    stream and zero bytes; a file cut before it is its base image. Each version exists so that an
    older vq refuses a file it would misread, by its version; writers use the lowest version that
    holds the file.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from . import flatcells
from .errors import VQError
from .limits import MAX_SIDE

MAGIC = b"\x89VQZ\r\n\x1a\n"
UNIFORM_VERSION = 1  # the same stages everywhere
STAGE_MAP_VERSION = 2  # a stage map
FLAT_VERSION = 3  # flat cells and padded stage chunks
FORMAT_VERSION = 4  # the newest this vq reads and writes: an enhancement layer
MODES = ("RGB", "RGBA", "L", "LA")
ENTROPY_MODELS = ("static", "context", "spatial")
MAX_STAGES = 255
MAX_CODEBOOK = 65535

_HEAD = struct.Struct("<8sBBBBBBIIHHH8s2s")
_CHUNK = struct.Struct("<cBII")
HEADER_SIZE = _HEAD.size + 4
CHUNK_HEAD_SIZE = _CHUNK.size


@dataclass
class Header:
    width: int
    height: int
    mode: str  # one of MODES
    model_id: str  # 16 hex chars
    factor: int
    model_stages: int
    stages: int  # stage chunks the file says it stores
    codebook: int
    entropy: str = "static"  # one of ENTROPY_MODELS
    version: int = UNIFORM_VERSION

    @property
    def has_stage_map(self) -> bool:
        return self.version >= STAGE_MAP_VERSION

    @property
    def has_flat_cells(self) -> bool:
        return self.version >= FLAT_VERSION

    @property
    def has_enhancement(self) -> bool:
        return self.version >= FORMAT_VERSION

    @property
    def has_alpha(self) -> bool:
        return self.mode in ("RGBA", "LA")

    @property
    def grid(self) -> tuple[int, int]:
        """Latent grid (h, w)."""
        return -(-self.height // self.factor), -(-self.width // self.factor)

    @property
    def padding(self) -> tuple[int, int]:
        """Replicate padding (bottom, right) in pixels added before encoding."""
        gh, gw = self.grid
        return gh * self.factor - self.height, gw * self.factor - self.width


@dataclass(frozen=True)
class EnhancementChunk:
    """An enhancement chunk: which layer, at which level, its symbol stream and stored size."""

    model_id: str
    level: int  # fixed point (LEVEL_ONE)
    stream: bytes
    size: int  # the payload's bytes as stored


@dataclass
class Container:
    header: Header
    stage_chunks: list[bytes]  # complete stage payloads present, in order (may be fewer than header.stages)
    alpha: bytes | None = None  # the zlib alpha payload
    chunk_sizes: list[tuple[str, int]] = field(default_factory=list)  # ("alpha"|"stage map"|"stage k", bytes incl. head)
    truncated: bool = False  # the file ends before all stages (at a chunk boundary, or see cut_inside)
    stage_map: bytes | None = None  # the stage map payload (versions 2 and 3)
    cut_inside: str | None = None  # the chunk a cut falls in, when the stages asked for end before it
    flat: bytes | None = None  # the flat-cell payload (version 3)
    stage_sizes: list[int] = field(default_factory=list)  # each stage payload's stored bytes, padding included
    enhancement: EnhancementChunk | None = None  # the enhancement chunk (version 4), unless cut off

    @property
    def stages_available(self) -> int:
        return len(self.stage_chunks)


def check_header(h: Header, name: str) -> None:
    """Bounds every field must satisfy, on writing and reading (the pixel count is a reader's
    policy, not the format's: vqcli.limits.check_size)."""
    if not (1 <= h.width <= MAX_SIDE and 1 <= h.height <= MAX_SIDE):
        raise VQError(f"{name}: absurd dimensions {h.width}x{h.height} (limit {MAX_SIDE} per side)")
    if h.factor < 1 or h.factor > 128 or h.factor & (h.factor - 1):
        raise VQError(f"{name}: bad header (downsampling factor {h.factor})")
    if not (1 <= h.stages <= h.model_stages <= MAX_STAGES):
        raise VQError(f"{name}: bad header ({h.stages} stages stored of {h.model_stages})")
    if not 2 <= h.codebook <= MAX_CODEBOOK:
        raise VQError(f"{name}: bad header (codebook size {h.codebook})")
    if h.mode not in MODES or h.entropy not in ENTROPY_MODELS:
        raise VQError(f"{name}: bad header (mode {h.mode!r}, entropy model {h.entropy!r})")
    if len(h.model_id) != 16:
        raise VQError(f"{name}: bad header (model id {h.model_id!r})")


def max_stage_bytes(h: Header) -> int:
    """Upper bound on a stage chunk: the tables give every code at least 2^-24 of probability
    mass, so no index costs more than 24 bits, plus the coder's flush words."""
    gh, gw = h.grid
    return 3 * gh * gw + 64


def max_map_bytes(h: Header) -> int:
    """Upper bound on a stage map chunk: a u8, a u16 per stage, at most 16 bits per flag."""
    gh, gw = h.grid
    return 1 + 2 * h.stages + 2 * gh * gw * (h.stages - 1) + 64


def max_flat_bytes(h: Header) -> int:
    """Upper bound on a flat-cell chunk: zlib's worst case when every cell is flat."""
    return flatcells.max_payload(h.grid)


LEVEL_ONE = 256
"""Fixed point of an enhancement level: level l is stored as l * LEVEL_ONE; between two trained
levels the steps are interpolated and the nearer level's tables code the symbols."""
MAX_ENH_CHANNELS = 256  # vqcli.enhance.EnhanceConfig's bound
_ENH = struct.Struct("<8sHI")


def max_enhancement_bytes(h: Header) -> int:
    """Upper bound on an enhancement chunk: 24 bits per symbol at the most channels a layer has,
    one 4x4-pixel cell per symbol, plus its fields and the coder's flush words."""
    gh, gw = h.grid
    return _ENH.size + 3 * MAX_ENH_CHANNELS * gh * gw * (h.factor // 4) ** 2 + 64


def pack_enhancement(model_id: str, level: int, stream: bytes, min_stream: int) -> bytes:
    """An enhancement payload; the stream is padded with zeros to min_stream bytes (the readers'
    bound on a stream's size) without changing what it codes."""
    return _ENH.pack(bytes.fromhex(model_id), level, len(stream)) + stream + bytes(max(0, min_stream - len(stream)))


def unpack_enhancement(payload: bytes, name: str) -> EnhancementChunk:
    if len(payload) < _ENH.size:
        raise VQError(f"{name}: corrupt enhancement chunk ({len(payload)} bytes)")
    mid, level, n = _ENH.unpack_from(payload)
    stream = payload[_ENH.size:_ENH.size + n]
    if len(stream) != n or payload[_ENH.size + n:].strip(b"\0"):
        raise VQError(f"{name}: corrupt enhancement chunk (bad stream length or padding)")
    return EnhancementChunk(mid.hex(), level, stream, len(payload))


def max_alpha_bytes(h: Header) -> int:
    """zlib's worst-case expansion of the H*W alpha plane, with margin."""
    n = h.width * h.height
    return n + n // 1000 + 1024


def _chunk(kind: bytes, index: int, payload: bytes) -> bytes:
    head = _CHUNK.pack(kind, index, len(payload), 0)[:6]
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack("<I", crc) + payload


def _padded(stream: bytes, size: int) -> bytes:
    """A padded stage payload of at least `size` bytes: the stream, zeros, the stream's length."""
    return stream + bytes(max(0, size - len(stream) - 4)) + struct.pack("<I", len(stream))


def write(header: Header, stage_payloads: list[bytes], alpha_payload: bytes | None = None,
          stage_map: bytes | None = None, flat: bytes | None = None, min_sizes: list[int] | None = None,
          enhancement: bytes | None = None) -> bytes:
    """Serialise a header and its chunks (header.stages must equal len(stage_payloads)). The version
    is the lowest that holds them: 4 with an enhancement payload, 3 with flat cells (flat; a
    stage map is then required too) or with a stage payload shorter than its min_sizes entry
    (padded; needs flat), 2 with a stage map, else 1."""
    check_header(header, "<output>")
    if header.stages != len(stage_payloads) or header.has_alpha != (alpha_payload is not None):
        raise ValueError("header does not match the chunks given")
    sizes = min_sizes or [0] * len(stage_payloads)
    short = [len(p) < n for p, n in zip(stage_payloads, sizes)]
    if (flat is not None or any(short) or enhancement is not None) and (flat is None or stage_map is None):
        raise ValueError("a version-3 or 4 file (flat cells, padded stages, enhancement) needs the flat-cell "
                         "chunk and a stage map")
    version = FORMAT_VERSION if enhancement is not None else FLAT_VERSION if flat is not None else \
        STAGE_MAP_VERSION if stage_map is not None else UNIFORM_VERSION
    head = _HEAD.pack(MAGIC, version, MODES.index(header.mode), ENTROPY_MODELS.index(header.entropy),
                      header.factor, header.model_stages, header.stages, header.width, header.height,
                      header.grid[1], header.grid[0], header.codebook, bytes.fromhex(header.model_id), b"\0\0")
    parts = [head, struct.pack("<I", zlib.crc32(head))]
    if alpha_payload is not None:
        parts.append(_chunk(b"A", 0, alpha_payload))
    if flat is not None:
        parts.append(_chunk(b"F", 0, flat))
    if stage_map is not None:
        parts.append(_chunk(b"M", 0, stage_map))
    parts += [_chunk(b"P", k, _padded(p, n)) if pad else _chunk(b"S", k, p)
              for k, (p, n, pad) in enumerate(zip(stage_payloads, sizes, short))]
    if enhancement is not None:
        parts.append(_chunk(b"E", 0, enhancement))
    return b"".join(parts)


def read_header(data: bytes, name: str = "<input>") -> Header:
    """Parse and check the fixed header (the first HEADER_SIZE bytes)."""
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        if len(data) < len(MAGIC) and MAGIC.startswith(data) and data:
            raise VQError(f"{name}: truncated at byte {len(data)} (inside the header)")
        raise VQError(f"{name}: not a vqz file (bad magic bytes)")
    if len(data) > len(MAGIC) and not UNIFORM_VERSION <= data[len(MAGIC)] <= FORMAT_VERSION:
        raise VQError(f"{name}: unsupported vqz format version {data[len(MAGIC)]} (this vq reads "
                      f"versions {UNIFORM_VERSION} to {FORMAT_VERSION})")
    if len(data) < HEADER_SIZE:
        raise VQError(f"{name}: truncated at byte {len(data)} (inside the {HEADER_SIZE}-byte header)")
    (_, version, mode, entropy, factor, model_stages, stages, width, height, grid_w, grid_h, codebook, mid,
     _reserved) = _HEAD.unpack_from(data)
    (crc,) = struct.unpack_from("<I", data, _HEAD.size)
    if crc != zlib.crc32(data[:_HEAD.size]):
        raise VQError(f"{name}: CRC mismatch in the header")
    if mode >= len(MODES) or entropy >= len(ENTROPY_MODELS):
        raise VQError(f"{name}: bad header (mode {mode}, entropy model {entropy})")
    h = Header(width, height, MODES[mode], mid.hex(), factor, model_stages, stages, codebook,
               ENTROPY_MODELS[entropy], version)
    check_header(h, name)
    if (grid_h, grid_w) != h.grid:
        raise VQError(f"{name}: bad header (latent grid {grid_w}x{grid_h} does not fit "
                      f"{width}x{height} at factor {factor})")
    return h


def _stream(payload: bytes, label: str, name: str) -> bytes:
    """The stream of a padded stage payload (stream, zero bytes, the stream's length as u32)."""
    if len(payload) < 4:
        raise VQError(f"{name}: corrupt {label} (a padded chunk of {len(payload)} bytes)")
    (n,) = struct.unpack_from("<I", payload, len(payload) - 4)
    if n > len(payload) - 4 or payload[n:-4].strip(b"\0"):
        raise VQError(f"{name}: corrupt {label} (bad padding)")
    return payload[:n]


def _cut(container: Container | None, label: str, error: str) -> Container:
    """A file cut inside a chunk: the container read so far, if it holds the stages the reader
    asked for (cut_inside names the chunk); else the error."""
    if container is None:
        raise VQError(error)
    container.truncated, container.cut_inside = True, label
    return container


def read(data: bytes, name: str = "<input>", upto: int | None = None) -> Container:
    """Parse a whole file. A file that ends exactly after a complete stage chunk is a valid
    (truncated) prefix; any other cut, a bad CRC or a misplaced chunk is an error, except that a
    cut after the first `upto` complete stage chunks (the stages a reader asks for) only ends the
    file there (cut_inside names the chunk it falls in)."""
    h = read_header(data, name)
    pos = HEADER_SIZE
    c = Container(h, [])
    expected = ([("A", 0)] if h.has_alpha else []) + ([("F", 0)] if h.has_flat_cells else []) + \
        ([("M", 0)] if h.has_stage_map else []) + [("S", k) for k in range(h.stages)] + \
        ([("E", 0)] if h.has_enhancement else [])
    labels = {"A": "alpha", "F": "flat-cell", "M": "stage map", "E": "enhancement"}
    limits = {"A": max_alpha_bytes, "F": max_flat_bytes, "M": max_map_bytes, "S": max_stage_bytes,
              "E": max_enhancement_bytes}
    for kind, index in expected:
        label = f"{labels[kind]} chunk" if kind in labels else f"stage {index + 1} chunk"
        if pos == len(data) and (kind == "S" and index > 0 or kind == "E"):
            c.truncated = True
            return c
        # a cut from here on ends the file after the stages a reader asks for, if it has them
        cut = c if upto is not None and len(c.stage_chunks) >= upto else None
        if pos + CHUNK_HEAD_SIZE > len(data):
            return _cut(cut, label, f"{name}: truncated at byte {len(data)} (inside the {label} header at byte {pos})")
        ckind, cindex, length, crc = _CHUNK.unpack_from(data, pos)
        padded = kind == "S" and ckind == b"P" and h.has_flat_cells
        if (ckind != kind.encode() and not padded) or cindex != index:
            raise VQError(f"{name}: corrupt file (expected the {label} at byte {pos}, found "
                          f"{ckind!r} #{cindex})")
        limit = limits[kind](h)
        if length > limit:
            raise VQError(f"{name}: corrupt file ({label} claims {length} bytes, at most {limit} possible)")
        start = pos + CHUNK_HEAD_SIZE
        if start + length > len(data):
            return _cut(cut, label, f"{name}: truncated at byte {len(data)} (the {label} needs {start + length})")
        payload = data[start:start + length]
        if zlib.crc32(payload, zlib.crc32(data[pos:pos + 6])) != crc:
            raise VQError(f"{name}: CRC mismatch in the {label}")
        if kind == "A":
            c.alpha = payload
        elif kind == "F":
            c.flat = payload
        elif kind == "M":
            c.stage_map = payload
        elif kind == "E":
            c.enhancement = unpack_enhancement(payload, name)
        else:
            c.stage_chunks.append(_stream(payload, label, name) if padded else payload)
            c.stage_sizes.append(length)
        c.chunk_sizes.append((labels.get(kind, f"stage {index + 1}"), CHUNK_HEAD_SIZE + length))
        pos = start + length
    if pos != len(data):
        raise VQError(f"{name}: corrupt file ({len(data) - pos} unexpected bytes after the last chunk)")
    return c


def pack_alpha(alpha) -> bytes:
    """zlib of a uint8 [H, W] alpha plane (lossless)."""
    return zlib.compress(alpha.tobytes(), 9)


def unpack_alpha(payload: bytes, h: Header, name: str):
    """The uint8 [H, W] alpha plane; the output size is bounded before inflating (no zip bomb)."""
    import numpy as np

    n = h.width * h.height
    d = zlib.decompressobj()
    try:
        raw = d.decompress(payload, n)
        extra = d.decompress(d.unconsumed_tail, 1) if d.unconsumed_tail else b""
    except zlib.error as e:
        raise VQError(f"{name}: corrupt alpha chunk ({e})") from None
    if len(raw) != n or extra or not d.eof:
        raise VQError(f"{name}: corrupt alpha chunk (does not hold {h.width}x{h.height} values)")
    return np.frombuffer(raw, dtype=np.uint8).reshape(h.height, h.width).copy()


def info(data: bytes, name: str = "<input>") -> dict:
    """A JSON-able summary of a file: header fields, chunk sizes, bits per stage."""
    c = read(data, name)
    h = c.header
    gh, gw = h.grid
    # bits_per_index: per latent cell (with a stage map, a stage codes fewer indices than cells)
    stages = [{"stage": k + 1, "bytes": n, "bits": 8 * n, "bits_per_index": 8 * n / (gh * gw)}
              for k, n in enumerate(c.stage_sizes)]
    return {
        "file": name, "bytes": len(data), "format_version": h.version, "width": h.width, "height": h.height,
        "mode": h.mode, "model_id": h.model_id, "factor": h.factor, "latent_grid": [gh, gw],
        "padding": list(h.padding), "codebook_size": h.codebook, "model_stages": h.model_stages,
        "stages_stored": h.stages, "stages_present": c.stages_available, "truncated": c.truncated,
        "entropy_model": h.entropy, "alpha_bytes": len(c.alpha) if c.alpha is not None else None,
        "stage_map_bytes": len(c.stage_map) if c.stage_map is not None else None,
        "flat_cell_bytes": len(c.flat) if c.flat is not None else None,
        "flat_cells": flatcells.decode(c.flat, h.grid, name).count if c.flat is not None else 0,
        "enhancement": None if c.enhancement is None else {
            "model_id": c.enhancement.model_id, "level": c.enhancement.level / LEVEL_ONE,
            "bytes": c.enhancement.size},
        "bpp": 8 * len(data) / (h.width * h.height), "chunks": [{"chunk": n, "bytes": b} for n, b in c.chunk_sizes],
        "stages": stages,
    }
