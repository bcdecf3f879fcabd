"""`python -m vqcli` runs the `vq` command line."""

from .cli import main

main()
