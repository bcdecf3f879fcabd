"""The exceptions the CLI turns into a one-line message: VQError (exit 1) and UsageError (exit 2)."""

from __future__ import annotations

import re


class VQError(Exception):
    """A user-facing error: its message names the file and the problem, on one line.

    params: the API parameters the message names by their Python name (stages, bpp, device...);
    the CLI shows them as its flags (--stages...), see cli_message.
    """

    def __init__(self, message: str = "", *, params: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.params = params


class UsageError(VQError):
    """Bad usage (a parameter's value, a combination of parameters): the CLI exits with code 2."""


def cli_message(e: VQError) -> str:
    """The message with each parameter it names written as the CLI flag (stages -> --stages)."""
    msg = str(e)
    for p in getattr(e, "params", ()):
        msg = re.sub(rf"(?<![\w.-]){re.escape(p)}(?=[\s,:)]|$)", "--" + p.replace("_", "-"), msg, count=1)
    return msg
