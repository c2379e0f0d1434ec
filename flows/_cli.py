"""Shared command line of the stage flows: ``python -m flows.<stage> [--params F] [key=value]``.

Each stage reads its own group of ``params.yaml`` (DVC's convention, grouped by stage); a params
file given with ``--params`` may hold a partial group, whose keys replace those of the project's
params.yaml. ``key=value`` overrides on the command line win (``key.sub=value`` sets one nested
key, as ``dvc exp run -S`` does). The whole group is then checked against the stage's schema
(:func:`flows.schema.base.validate`: names, types, ranges, nested settings, output paths,
inputs, model folders) BEFORE the flow module — Prefect, torch, diffusers — is imported: a bad
value costs about a second and prints one line. Only then is the flow imported and run; it
checks the same params again as its first step (what a deployment run relies on).

Every failure ends the process with ONE line ``error: ...`` on stderr naming the value, key or
path: bad input (:class:`~dag_core.errors.DagError`) and OS errors such as a read-only folder,
a full disk or a file-size limit (``[Errno 27] File too large: <path>``) exit 2; a run that could
not finish through no fault of its input (:class:`~dag_core.errors.RunInterrupted`: a lost Dask
worker, the run's Prefect server failing; anything unexpected) exits 1. While a flow runs,
stderr is reserved for that line: Prefect's log, progress bars and library warnings go to stdout
(:func:`reserved_stderr`); set ``DAG_DEBUG=1`` to leave stderr alone and see every traceback.

Ctrl-C and SIGTERM — to the process or its whole group — stop a run within seconds: the signal
handler raises KeyboardInterrupt in the main thread and in every thread running interruptible
work (:mod:`dag_core.interrupt`: a shard on the thread-pool task runner), and a watchdog ends the
process after :data:`STOP_GRACE` s whatever it is doing (a second signal ends it at once). The
run ends with one line ``error: interrupted; ...`` saying what is finished and how to go on
(synthesis: ``k/n shards written, rerun the same command to resume``) and exit status 128 +
the signal (130 for SIGINT, 143 for SIGTERM). A run with no Prefect server configured gets its
own (:mod:`flows._server`), which group signals do not reach and which dies with the command
however it ends, ``kill -9`` included.

``--serve NAME`` serves the stage's flow as deployment ``<flow>/NAME`` instead of running it
once; its parameters are what the command line changes from params.yaml (the rest come from the
flow's signature, i.e. params.yaml, at each run).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any, NoReturn

from dag_core.errors import DagError, RunInterrupted
from dag_core.interrupt import on_stop, progress_note, resume_work, stop_work
from flows._params import apply_overrides, changed, load_group, stage_defaults
from flows.schema.base import StageParams, validate

ANTICIPATED: tuple[type[BaseException], ...] = (DagError, RunInterrupted, OSError)
#: the same flow names, for the filter of Prefect's "Finished in state Failed(...)" lines
_ANTICIPATED_NAMES = ("DagError", "ParamError", "RunInterrupted", "OSError", "Error: [Errno")
#: the params file a command line reads by default (DVC runs stages in the project folder)
DEFAULT_PARAMS = "params.yaml"
#: seconds a run has to stop by itself after Ctrl-C / SIGTERM before the process is ended
STOP_GRACE = 7.0
#: what an interrupted stage that has not said what it finished leaves behind
INTERRUPTED = (
    "interrupted; every output is written whole or not at all, rerun the same command to run "
    "the stage again"
)

load_params = load_group  # the name stage code and tests have used

# The command's state: the signal that is stopping it, the saved stderr while a flow runs
# (reserved_stderr), whether its one error line is out, and the run's own Prefect server.
_STATE: dict[str, Any] = {
    "signum": None,
    "deadline": None,
    "stderr_fd": None,
    "printed": False,
    "server": None,
    "command": False,
}
_LINE_LOCK = threading.Lock()


def debug_enabled() -> bool:
    """Whether ``DAG_DEBUG`` asks for full tracebacks."""
    return os.environ.get("DAG_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def check_runtime(runtime: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a stage's ``runtime`` group and that its device is there (needs torch), before any
    output is touched; returns it as a plain dict for the stage's tasks."""
    from dag_core.runtime import RuntimeConfig

    RuntimeConfig.from_params(runtime).resolve_device()
    return dict(runtime or {})


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


_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): \S")


def failure_line(exc: BaseException) -> str:
    """The one ``error: ...`` line for an exception no check anticipated (exit status 1): the
    Prefect API failing (with what the run's own server logged), memory, or a bug."""
    names = {c.__module__.split(".")[0] for c in type(exc).__mro__}
    server = _STATE["server"]
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


def _emit(line: str) -> None:
    """Print the command's one error line, once, to the real stderr (also while a flow runs)."""
    with _LINE_LOCK:
        if _STATE["printed"]:
            return
        _STATE["printed"] = True
        fd = _STATE["stderr_fd"]
        if fd is not None:
            os.write(fd, (line + "\n").encode())
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
        _STATE["stderr_fd"] = saved
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        with _LINE_LOCK:
            os.dup2(saved, 2)
            os.close(saved)
            _STATE["stderr_fd"] = None


class _QuietAnticipated(logging.Filter):
    """Keep tracebacks of anticipated errors off the console (the ``error:`` line says it all)."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        if info and info[1] is not None and isinstance(info[1], ANTICIPATED):
            return False
        msg = record.getMessage() if record.args else str(record.msg)
        return not (
            msg.startswith("Finished in state Failed") and any(n in msg for n in _ANTICIPATED_NAMES)
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


def _quick_exit(code: int) -> NoReturn:
    """End a command whose run is over now, skipping the interpreter's slow teardown (seconds
    with torch, diffusers and Prefect loaded): send the last logs to Prefect (at most 5 s),
    flush the output, stop the run's own server, exit."""
    with suppress(Exception):  # the process is ending either way
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    if _STATE["server"] is not None:
        _STATE["server"].stop()
    os._exit(code)


def _exit_now(signum: int) -> NoReturn:
    """End the process at once with the interrupted line (the run's own Prefect server dies
    with it)."""
    _emit(interrupted_line())
    os._exit(128 + signum)


def _deadline() -> None:
    time.sleep(STOP_GRACE)
    _exit_now(_STATE["signum"] or signal.SIGTERM)  # Prefect's SIGTERM bridge ran first


def _arm_deadline() -> None:
    """End the process :data:`STOP_GRACE` s from now if the run has not stopped by then."""
    if _STATE["deadline"] is None:
        _STATE["deadline"] = threading.Thread(target=_deadline, name="dag-stop", daemon=True)
        _STATE["deadline"].start()


def _on_signal(signum: int, frame: Any) -> None:
    """Ctrl-C / SIGTERM: stop the main thread and the work threads now; end the process after
    :data:`STOP_GRACE` s if the run has not stopped by then (at once on a second signal).

    During a flow run Prefect handles SIGTERM first (its ``TerminationSignal``), reports the run
    crashed and sends SIGTERM again, which lands here."""
    if _STATE["signum"] is not None:
        _exit_now(_STATE["signum"])
    _STATE["signum"] = signum
    stop_work()
    _arm_deadline()
    raise KeyboardInterrupt(f"interrupted by {signal.Signals(signum).name}")


def _signal_of(exc: BaseException) -> int | None:
    """The signal that stopped the run, if ``exc`` is how it arrived."""
    if isinstance(exc, KeyboardInterrupt):
        return _STATE["signum"] or signal.SIGINT
    if type(exc).__name__ == "TerminationSignal":  # Prefect's own SIGTERM bridge
        return int(getattr(exc, "signal", signal.SIGTERM))
    return None


def run_cli(body: Callable[[], Any], *, prefect: bool = True) -> Any:
    """Run ``body`` as a command: every failure → one ``error:`` line and an exit status (2 for
    bad input and OS errors, the error's own ``exit_code`` — 1 for a run that a rerun resumes —
    1 for anything unexpected, 128 + signal when Ctrl-C or SIGTERM stopped it).

    ``prefect``: filter Prefect's console logging (False before Prefect is imported).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
    on_stop(_arm_deadline)  # work stopped by Prefect's SIGTERM bridge arms it too
    if _STATE["signum"] is None:
        resume_work()
    _STATE["printed"] = False
    try:
        with quiet_prefect_console() if prefect else nullcontext():
            return body()
    except SystemExit:
        raise
    except ANTICIPATED as exc:
        if debug_enabled():
            traceback.print_exc()
        _emit(error_line(exc))
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except BaseException as exc:
        signum = _signal_of(exc)
        if debug_enabled():
            traceback.print_exc()
        if signum is not None:
            _emit(interrupted_line())
            if _STATE["command"]:
                _quick_exit(128 + signum)
            raise SystemExit(128 + signum) from None
        _emit(failure_line(exc))
        server = _STATE["server"]
        if _STATE["command"] and server is not None and not server.alive():
            _quick_exit(1)  # nothing left to report to: Prefect's exit hook would retry it
        raise SystemExit(1) from None


def mark_command() -> None:
    """This process is a command line (``python -m flows.<stage>``): once its run is over
    (interrupted, or its server lost) it may end without the interpreter's teardown."""
    _STATE["command"] = True


def run_flow(
    load: Callable[[], Any],
    call: Callable[[Any], Any],
    check: Callable[[], Any] | None = None,
) -> Any:
    """Run a flow as a command: start the run's own Prefect server when none is configured
    (:func:`flows._server.cli_server`), ``load()`` the flow meanwhile (its import of torch
    overlaps the server's start) and run ``check()`` (e.g. that the device is there), wait for
    the server, then ``call(flow)`` with stderr reserved for the error line. Errors end as
    :func:`run_cli` says; the server stops after the line is out."""
    with ExitStack() as stack:

        def body() -> Any:
            from flows._server import cli_server

            server = stack.enter_context(cli_server())
            _STATE["server"] = server
            stack.callback(_STATE.update, server=None)
            fn = load()
            if check is not None:
                check()
            if server is not None:
                server.ready()
            with reserved_stderr():
                return call(fn)

        return run_cli(body)


def _parser(section: str, doc: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m flows.{section}", description=doc)
    parser.add_argument(
        "--params", default=DEFAULT_PARAMS, help=f"params file (default: {DEFAULT_PARAMS})"
    )
    parser.add_argument(
        "--serve", metavar="NAME", help="serve the flow as a deployment NAME instead of running"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="key=value or key.sub=value overrides of the stage's params (values are YAML)",
    )
    return parser


def stage_params(
    schema: type[StageParams],
    params_file: str,
    overrides: list[str],
    *,
    files: bool = True,
    mark: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The group a command line asks for (params file, then overrides) and its checked,
    resolved form (:func:`flows.schema.base.validate`)."""
    group = apply_overrides(load_group(params_file, schema.stage), overrides)
    return group, validate(schema, group, files=files, mark=mark)


def _device_check(kwargs: Mapping[str, Any]) -> Callable[[], Any] | None:
    """The check that the run's device is there (needs torch), before a Prefect run starts."""
    if "runtime" not in kwargs:
        return None
    return lambda: check_runtime(kwargs["runtime"])


def run_stage(
    fn: Callable[..., Any], schema: type[StageParams], argv: list[str] | None = None
) -> Any:
    """Run flow ``fn`` (its params: ``schema``) as its command line does, params read and
    checked first; for callers that have imported the flow already."""
    args = _parser(schema.stage, fn.__doc__).parse_args(argv)

    _, kwargs = run_cli(
        lambda: stage_params(schema, args.params, args.overrides, mark=True), prefect=False
    )
    return run_flow(lambda: fn, lambda f: f(**kwargs), _device_check(kwargs))


def serve(fn: Any, name: str, group: Mapping[str, Any], section: str) -> None:
    """Serve ``fn`` as deployment ``<flow>/<name>`` with the parameters that ``group`` changes
    from params.yaml (every other parameter comes from the flow's signature at each run)."""
    fn.serve(name=name, parameters=changed(group, stage_defaults(section)))


def main(schema: type[StageParams], argv: list[str] | None = None) -> NoReturn:
    """``python -m flows.<stage>``: check the params (``schema``), then import the flow and run
    (or serve) it. Called by each stage module before its own imports, so bad input is reported
    before Prefect or torch load."""
    section = schema.stage
    mark_command()
    args = _parser(section).parse_args(sys.argv[1:] if argv is None else argv)
    # A served deployment's runs bring their own parameters: its inputs are checked per run.
    serving = args.serve is not None
    group, kwargs = run_cli(
        lambda: stage_params(
            schema, args.params, args.overrides, files=not serving, mark=not serving
        ),
        prefect=False,
    )

    def load() -> Any:
        return getattr(importlib.import_module(f"flows.{section}"), section)

    if serving:
        run_flow(load, lambda fn: serve(fn, args.serve, group, section))
    else:
        run_flow(load, lambda fn: fn(**kwargs), _device_check(kwargs))
    raise SystemExit(0)
