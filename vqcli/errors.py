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



def one_line(message: str) -> str:
    """The message with control characters (a newline in a file name, say) escaped, so that an
    error is always exactly one line."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def is_out_of_memory(e: BaseException) -> bool:
    """MemoryError, torch.OutOfMemoryError, or a RuntimeError saying "out of memory" (torch's
    allocators on some devices and versions)."""
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower())
