"""The exceptions the CLI turns into a one-line message: VQError (exit 1) and UsageError (exit 2)."""


class VQError(Exception):
    """A user-facing error: its message names the file and the problem, on one line."""


class UsageError(VQError):
    """Bad usage (a flag's value, a combination of flags): the CLI exits with code 2."""
