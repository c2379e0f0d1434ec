"""Run a stage's flow as a command (or serve it as a deployment): the entry point of every stage.

:func:`main` checks the params (:mod:`flows.cli.parse`) before the flow module — Prefect, torch,
diffusers — is imported, then runs the flow once with the run's own Prefect server when none is
configured (:mod:`flows._server`), or serves it with ``--serve NAME``. Every failure ends in one
line and an exit status (:mod:`flows.cli.errors`); stderr is kept for that line
(:mod:`flows.cli.console`); Ctrl-C and SIGTERM stop the run (:mod:`flows.cli.signals`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from contextlib import ExitStack, nullcontext, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from flows._params import changed, stage_defaults
from flows.cli import console, signals
from flows.cli.errors import ANTICIPATED, debug_enabled, error_line, failure_line, interrupted_line
from flows.cli.parse import parser, stage_params
from flows.schema.base import StageParams

if TYPE_CHECKING:
    from flows._server import CliServer


@dataclass
class _Command:
    """Whether this process is a command line, and its run's own Prefect server."""

    command: bool = False
    server: CliServer | None = None


_RUN = _Command()


def check_runtime(runtime: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a stage's ``runtime`` group and that its device is there (needs torch), before any
    output is touched; returns it as a plain dict for the stage's tasks."""
    from dag_core.runtime import RuntimeConfig

    RuntimeConfig.from_params(runtime).resolve_device()
    return dict(runtime or {})


def mark_command() -> None:
    """This process is a command line (``python -m flows.<stage>``): once its run is over
    (interrupted, or its server lost) it may end without the interpreter's teardown."""
    _RUN.command = True


def _quick_exit(code: int) -> NoReturn:
    """End a command whose run is over now, skipping the interpreter's slow teardown (seconds
    with torch, diffusers and Prefect loaded): send the last logs to Prefect (at most 5 s),
    flush the output, stop the run's own server, exit."""
    with suppress(Exception):  # the process is ending either way
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    if _RUN.server is not None:
        _RUN.server.stop()
    os._exit(code)


def run_cli(body: Callable[[], Any], *, prefect: bool = True) -> Any:
    """Run ``body`` as a command: every failure → one ``error:`` line and an exit status (2 for
    bad input and OS errors, the error's own ``exit_code`` — 1 for a run that a rerun resumes —
    1 for anything unexpected, 128 + signal when Ctrl-C or SIGTERM stopped it).

    ``prefect``: filter Prefect's console logging (False before Prefect is imported).
    """
    signals.install()
    console.new_command()
    try:
        with console.quiet_prefect_console() if prefect else nullcontext():
            return body()
    except SystemExit:
        raise
    except ANTICIPATED as exc:
        if debug_enabled():
            traceback.print_exc()
        console.emit(error_line(exc))
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except BaseException as exc:
        signum = signals.signal_of(exc)
        if debug_enabled():
            traceback.print_exc()
        if signum is not None:
            console.emit(interrupted_line())
            if _RUN.command:
                _quick_exit(128 + signum)
            raise SystemExit(128 + signum) from None
        console.emit(failure_line(exc, _RUN.server))
        if _RUN.command and _RUN.server is not None and not _RUN.server.alive():
            _quick_exit(1)  # nothing left to report to: Prefect's exit hook would retry it
        raise SystemExit(1) from None


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
            _RUN.server = server
            stack.callback(setattr, _RUN, "server", None)
            fn = load()
            if check is not None:
                check()
            if server is not None:
                server.ready()
            with console.reserved_stderr():
                return call(fn)

        return run_cli(body)


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
    args = parser(schema.stage, fn.__doc__).parse_args(argv)

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
    args = parser(section).parse_args(sys.argv[1:] if argv is None else argv)
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
