"""The exception types of the library: bad input, one bad setting, and an interrupted run."""

from __future__ import annotations

from typing import Any


class DagError(ValueError):
    """Bad input: a one-line message naming the bad value or file.

    Command-line entry points print ``error: <message>`` and exit with status 2.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ParamError(DagError):
    """One bad setting, named by its dotted key: ``synthesize.steps=0: must be >= 1``.

    Args:
        key: The dotted key of the setting (``guidance.w_dc``, ``synthesize.variants.dag.tau``).
        value: The bad value, shown with ``repr``.
        reason: What is wrong with it (``must be >= 1``, ``expected an int``).
    """

    def __init__(self, key: str, value: Any, reason: str) -> None:
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"{key}={value!r}: {reason}")

    def rebased(self, old: str, new: str) -> ParamError:
        """The same error with the key's leading ``old`` replaced by ``new`` (a class's own name
        replaced by where its settings sit in a params group)."""
        if old == new or not (self.key == old or self.key.startswith(old + ".")):
            return self
        return ParamError(new + self.key[len(old) :], self.value, self.reason)


class RunInterrupted(Exception):
    """A run that could not finish through no fault of its input (e.g. every Dask worker holding
    a shard died). Not a :class:`DagError`: the input was fine, and rerunning the same command
    resumes. Command-line entry points print one ``error: <message>`` line and exit with 1.
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
