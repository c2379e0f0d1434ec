"""Shared command line of the stage flows: ``python -m flows.<stage> [--params F] [key=value]``.

Each stage reads its own group of ``params.yaml`` (DVC's convention, grouped by stage); a params
file given with ``--params`` may hold a partial group, whose keys replace those of the project's
params.yaml. ``key=value`` overrides on the command line win (``key.sub=value`` sets one nested
key, as ``dvc exp run -S`` does). The whole group is then checked against the stage's schema
(:func:`flows.schema.base.validate`: names, types, ranges, nested settings, output paths,
inputs, model folders) BEFORE the flow module — Prefect, torch, diffusers — is imported: a bad
value costs about a second and prints one line. Only then is the flow imported and run; it
checks the same params again as its first step (what a deployment run relies on).

Every anticipated error — bad input (:class:`~dag_core.errors.DagError`, exit 2), an
interrupted run (:class:`~dag_core.errors.RunInterrupted`, exit 1: rerun to resume) or an OS
error such as a read-only folder or a full disk (exit 2) — ends the process with ONE line
``error: ...`` on stderr naming the value or path. Prefect's traceback of it is kept off the
console (it still reaches the Prefect API); set ``DAG_DEBUG=1`` to see every traceback.
SIGTERM ends a run like Ctrl-C, so an ephemeral Prefect server started for it is stopped too.

``--serve NAME`` serves the stage's flow as deployment ``<flow>/NAME`` instead of running it
once; its parameters are what the command line changes from params.yaml (the rest come from the
flow's signature, i.e. params.yaml, at each run).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any, NoReturn

from dag_core.errors import DagError, RunInterrupted
from flows._params import apply_overrides, changed, load_group, stage_defaults
from flows.schema.base import StageParams, validate

ANTICIPATED: tuple[type[BaseException], ...] = (DagError, RunInterrupted, OSError)
#: the same flow names, for the filter of Prefect's "Finished in state Failed(...)" lines
_ANTICIPATED_NAMES = ("DagError", "ParamError", "RunInterrupted", "OSError", "Error: [Errno")
#: the params file a command line reads by default (DVC runs stages in the project folder)
DEFAULT_PARAMS = "params.yaml"

load_params = load_group  # the name stage code and tests have used


def debug_enabled() -> bool:
    """Whether ``DAG_DEBUG`` asks for full tracebacks."""
    return os.environ.get("DAG_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def check_runtime(runtime: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a stage's ``runtime`` group and that its device is there (needs torch), before any
    output is touched; returns it as a plain dict for the stage's tasks."""
    from dag_core.runtime import RuntimeConfig

    RuntimeConfig.from_params(runtime).resolve_device()
    return dict(runtime or {})


def error_line(exc: BaseException) -> str:
    """The one ``error: ...`` line for an anticipated exception (naming the file of OS errors)."""
    if isinstance(exc, OSError) and not isinstance(exc, DagError):
        reason = exc.strerror or type(exc).__name__
        names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
        detail = f"{reason}: {' -> '.join(names)}" if names else str(exc) or reason
        return "error: " + " ".join(detail.split())
    return "error: " + " ".join(str(exc).split())


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


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def run_cli(body: Callable[[], Any], *, prefect: bool = True) -> Any:
    """Run ``body`` as a command: anticipated errors → one ``error:`` line and exit status 2
    (or the error's own ``exit_code``: 1 for an interrupted run that a rerun resumes).

    SIGTERM is turned into KeyboardInterrupt so context managers and atexit hooks (the ephemeral
    Prefect server's shutdown) run; the process then exits with 128 + 15. ``prefect``: filter
    Prefect's console logging (False before Prefect is imported).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm)
    try:
        with quiet_prefect_console() if prefect else nullcontext():
            return body()
    except ANTICIPATED as exc:
        if debug_enabled():
            traceback.print_exc()
        print(error_line(exc), file=sys.stderr, flush=True)
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except KeyboardInterrupt as exc:
        if "terminated by signal" in str(exc):
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(128 + signal.SIGTERM) from None
        raise


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


def _start(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    if "runtime" in kwargs:  # the device is checked before a Prefect run (or its server) starts
        check_runtime(kwargs["runtime"])
    return fn(**kwargs)


def run_stage(
    fn: Callable[..., Any], schema: type[StageParams], argv: list[str] | None = None
) -> Any:
    """Run flow ``fn`` (its params: ``schema``) as its command line does, params read and
    checked first; for callers that have imported the flow already."""
    args = _parser(schema.stage, fn.__doc__).parse_args(argv)

    def body() -> Any:
        _, kwargs = stage_params(schema, args.params, args.overrides, mark=True)
        return _start(fn, kwargs)

    return run_cli(body)


def serve(fn: Any, name: str, group: Mapping[str, Any], section: str) -> None:
    """Serve ``fn`` as deployment ``<flow>/<name>`` with the parameters that ``group`` changes
    from params.yaml (every other parameter comes from the flow's signature at each run)."""
    fn.serve(name=name, parameters=changed(group, stage_defaults(section)))


def main(schema: type[StageParams], argv: list[str] | None = None) -> NoReturn:
    """``python -m flows.<stage>``: check the params (``schema``), then import the flow and run
    (or serve) it. Called by each stage module before its own imports, so bad input is reported
    before Prefect or torch load."""
    section = schema.stage
    args = _parser(section).parse_args(sys.argv[1:] if argv is None else argv)
    # A served deployment's runs bring their own parameters: its inputs are checked per run.
    serving = args.serve is not None
    group, kwargs = run_cli(
        lambda: stage_params(
            schema, args.params, args.overrides, files=not serving, mark=not serving
        ),
        prefect=False,
    )
    fn = run_cli(
        lambda: getattr(importlib.import_module(f"flows.{section}"), section), prefect=False
    )
    if serving:
        run_cli(lambda: serve(fn, args.serve, group, section))
    else:
        run_cli(lambda: _start(fn, kwargs))
    raise SystemExit(0)
