"""The one exception type the library raises for bad input."""

from __future__ import annotations


class DagError(ValueError):
    """Bad input: a one-line message naming the bad value or file.

    Command-line entry points print ``error: <message>`` and exit with status 2.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
