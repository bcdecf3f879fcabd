"""The one exception type the CLI turns into a one-line message and exit code 1."""


class VQError(Exception):
    """A user-facing error: its message names the file and the problem, on one line."""
