"""The console of a run: stderr reserved for the one error line, Prefect's log kept quiet."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flows.cli.errors import ANTICIPATED, ANTICIPATED_NAMES, debug_enabled


@dataclass
class _Line:
    """The real stderr while a flow runs (:func:`reserved_stderr`); whether the line is out."""

    stderr_fd: int | None = None
    printed: bool = False


_LINE = _Line()
_LINE_LOCK = threading.Lock()


def new_command() -> None:
    """A new command (or a test's next call) may print its own error line."""
    with _LINE_LOCK:
        _LINE.printed = False


def emit(line: str) -> None:
    """Print the command's one error line, once, to the real stderr (also while a flow runs)."""
    with _LINE_LOCK:
        if _LINE.printed:
            return
        _LINE.printed = True
        if _LINE.stderr_fd is not None:
            os.write(_LINE.stderr_fd, (line + "\n").encode())
            return
    print(line, file=sys.stderr, flush=True)


@contextmanager
def reserved_stderr() -> Iterator[None]:
    """While a flow runs, everything the process writes to stderr (Prefect's console log,
    progress bars, library warnings, C-level messages) goes to stdout instead, so a failing
    run's stderr holds exactly its one ``error:`` line. A no-op with ``DAG_DEBUG=1``."""
    if debug_enabled():
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        saved = os.dup(2)
        os.dup2(1, 2)
    except OSError:  # no usable stdout: leave stderr as it is
        yield
        return
    with _LINE_LOCK:
        _LINE.stderr_fd = saved
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        with _LINE_LOCK:
            os.dup2(saved, 2)
            os.close(saved)
            _LINE.stderr_fd = None


class _QuietAnticipated(logging.Filter):
    """Keep tracebacks of anticipated errors off the console (the ``error:`` line says it all)."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        if info and info[1] is not None and isinstance(info[1], ANTICIPATED):
            return False
        msg = record.getMessage() if record.args else str(record.msg)
        return not (
            msg.startswith("Finished in state Failed") and any(n in msg for n in ANTICIPATED_NAMES)
        )


@contextmanager
def quiet_prefect_console() -> Iterator[None]:
    """Filter Prefect's console handlers (not its API handler) for the duration of a run."""
    if debug_enabled():
        yield
        return
    from prefect.logging.handlers import PrefectConsoleHandler

    flt = _QuietAnticipated()
    loggers = [logging.getLogger()] + [
        lg
        for lg in list(logging.root.manager.loggerDict.values())
        if isinstance(lg, logging.Logger)
    ]
    handlers = {
        h
        for lg in loggers
        for h in getattr(lg, "handlers", [])
        if isinstance(h, PrefectConsoleHandler)
    }
    for h in handlers:
        h.addFilter(flt)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(flt)
