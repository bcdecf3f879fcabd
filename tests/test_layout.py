"""One place for each concept: checks that keep the package from growing second copies."""

from __future__ import annotations

import re
from pathlib import Path

from vqcli.images import IMAGE_FORMATS, IMAGE_SUFFIXES

PKG = Path(__file__).resolve().parent.parent / "vqcli"


def test_messages_list_the_accepted_image_formats() -> None:
    aliases = {"jpeg": "jpg", "tif": "tiff"}
    assert set(IMAGE_FORMATS.split(", ")) == {aliases.get(s[1:], s[1:]) for s in IMAGE_SUFFIXES}
    for path in PKG.glob("*.py"):  # every other list of formats is IMAGE_FORMATS itself
        if path.name != "images.py":
            assert not re.search(r"png, jpg", path.read_text()), path.name


def test_only_the_quantizer_touches_its_private_codes() -> None:
    for path in PKG.glob("*.py"):
        if path.name != "quantizer.py":
            assert "._codes(" not in path.read_text(), path.name
