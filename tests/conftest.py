"""Shared fixtures: generated images and tiny weights trained on them (no ../shared needed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _restore_torch_state() -> Iterator[None]:
    """Every test starts from the same process state and leaves it so: thread count, default
    dtype, deterministic-algorithm flags and the RNGs (torch, Python, numpy's global one)."""
    import random

    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    deterministic = torch.are_deterministic_algorithms_enabled()
    rng, py, npy = torch.get_rng_state(), random.getstate(), np.random.get_state()
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.use_deterministic_algorithms(deterministic)
    torch.set_rng_state(rng)
    random.setstate(py)
    np.random.set_state(npy)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """VQ_TEST_ORDER=reverse (files and tests backwards) or shuffle[:SEED] runs the suite in
    another order, to find tests that depend on the ones run before them."""
    import os
    import random

    order = os.environ.get("VQ_TEST_ORDER", "")
    if order == "reverse":
        items.reverse()
    elif order.startswith("shuffle"):
        random.Random(int(order.partition(":")[2] or 0)).shuffle(items)


def make_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like uint8 RGB image: gradients, blobs and a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        fy, fx, ph = rng.uniform(0.02, 0.15, 2).tolist() + [rng.uniform(0, 6.28)]
        img[..., c] = 128 + 90 * np.sin(xx * fx + ph) * np.cos(yy * fy)
    for _ in range(4):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, max(5, min(h, w) / 3))
        img += (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)[..., None] * rng.uniform(-60, 60, 3)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight generated PNGs of assorted sizes (some smaller than a 32-pixel crop)."""
    d = tmp_path_factory.mktemp("images")
    sizes = [(64, 96), (80, 80), (48, 72), (96, 64), (24, 40), (72, 120), (64, 64), (56, 88)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(make_image(h, w, i)).save(d / f"img{i}.png")
    return d


@pytest.fixture(scope="module")
def shipped():
    """The shipped default model, loaded once per test module."""
    from vqcli.weights import default_weights_path, load_weights

    return load_weights(default_weights_path(), "cpu")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory, image_dir: Path) -> Path:
    """Release weights of the `tiny` preset trained for a few dozen steps on generated images."""
    from vqcli.config import PRESETS, TrainConfig
    from vqcli.train import train

    out = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    tcfg = TrainConfig(steps=40, batch_size=8, crop=32, lr=3e-3, warmup=5, workers=0, ckpt_every=1000, val_every=1000)
    train(image_dir, out, PRESETS["tiny"], tcfg, device="cpu", progress=False)
    return out


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the body with torch limited to `threads` (restored after)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def decode_with_threads(weights, data: bytes, threads: int, name: str = "<input>"):
    """codec.decompress of data with torch limited to `threads`."""
    from vqcli.codec import decompress

    with torch_threads(threads):
        return decompress(weights, data, name=name)
