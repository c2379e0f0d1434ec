"""The one ``error: ...`` line of a failed command, and which failures are anticipated."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from dag_core.errors import DagError, RunInterrupted
from dag_core.interrupt import progress_note

if TYPE_CHECKING:
    from flows._server import CliServer

#: failures a check anticipated: one line, exit 2 (``RunInterrupted``: its own ``exit_code``, 1)
ANTICIPATED: tuple[type[BaseException], ...] = (DagError, RunInterrupted, OSError)
#: the same failures by name, for the filter of Prefect's "Finished in state Failed(...)" lines
ANTICIPATED_NAMES = ("DagError", "ParamError", "RunInterrupted", "OSError", "Error: [Errno")
#: what an interrupted stage that has not said what it finished leaves behind
INTERRUPTED = (
    "interrupted; every output is written whole or not at all, rerun the same command to run "
    "the stage again"
)
_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): \S")


def debug_enabled() -> bool:
    """Whether ``DAG_DEBUG`` asks for full tracebacks (and leaves stderr alone)."""
    return os.environ.get("DAG_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def error_line(exc: BaseException) -> str:
    """The one ``error: ...`` line for an anticipated exception (naming the file of OS errors:
    ``error: [Errno 27] File too large: <path>``)."""
    if isinstance(exc, OSError) and not isinstance(exc, DagError):
        reason = exc.strerror or type(exc).__name__
        if exc.errno is not None:
            reason = f"[Errno {exc.errno}] {reason}"
        names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
        if names:
            return "error: " + _one_line(f"{reason}: {' -> '.join(names)}")
        return "error: " + _one_line(str(exc) or reason)
    return "error: " + _one_line(str(exc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _api_failure(exc: BaseException) -> str:
    """What went wrong talking to the Prefect API, in a few words (``HTTP 500 for POST
    /api/flow_runs/``, ``ConnectError: ...``)."""
    response, request = getattr(exc, "response", None), getattr(exc, "request", None)
    status = getattr(response, "status_code", None)
    if status is not None and request is not None:
        return f"HTTP {status} for {request.method} {request.url.path}"
    return _first_line(exc)


def _server_error(log: Path) -> str | None:
    """The last exception the run's own server logged (e.g. ``sqlite3.OperationalError: disk
    I/O error`` when its database cannot grow), if any."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    found = [ln.strip() for ln in lines if _EXC_LINE.match(ln)]
    return found[-1] if found else None


def failure_line(exc: BaseException, server: CliServer | None = None) -> str:
    """The one ``error: ...`` line for an exception no check anticipated (exit status 1): the
    Prefect API failing (with what the run's own ``server`` logged), memory, or a bug."""
    names = {c.__module__.split(".")[0] for c in type(exc).__mro__}
    if names & {"httpx", "httpcore", "prefect"} or (server is not None and not server.alive()):
        url = os.environ.get("PREFECT_API_URL") or "(no URL)"
        detail, whose = _api_failure(exc), "the"
        if server is not None:
            server.failed = True
            logged = _server_error(server.log_path)
            detail += f"; the server logged {logged}" if logged else ""
            detail += f"; see {server.log_path}"
            whose = "the run's"
        return "error: " + _one_line(
            f"{whose} Prefect server at {url} failed ({detail}); rerun the same command once "
            "it is fixed"
        )
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return "error: " + _one_line(
            f"out of memory ({_first_line(exc)}); lower batch_size or free memory, then rerun"
        )
    return "error: " + _one_line(f"unexpected {_first_line(exc)} (DAG_DEBUG=1 shows the traceback)")


def interrupted_line() -> str:
    """The one line of a run stopped by Ctrl-C or SIGTERM: what it finished, how to go on."""
    note = progress_note()
    if note:
        return f"error: interrupted; {note}, rerun the same command to resume"
    return f"error: {INTERRUPTED}"
