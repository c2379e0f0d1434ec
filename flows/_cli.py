"""Shared command line of the stage flows: ``python -m flows.<stage> [--params F] [key=value]``.

Each stage reads its own group of ``params.yaml`` (DVC's convention, grouped by stage), lets
``key=value`` overrides on the command line win, checks the names and types against the flow's
typed signature and that every output path named in dvc.yaml can be written, and only then runs
the flow. A missing group or an unknown top-level key is an error: a CLI run never falls back to
the flow's built-in defaults silently.

Every anticipated error — bad input (:class:`~dag_core.errors.DagError`) or an OS error such as a
read-only folder or a full disk — ends the process with ONE line ``error: ...`` on stderr naming
the value or path, and exit status 2. Prefect's traceback of it is kept off the console (it still
reaches the Prefect API); set ``DAG_DEBUG=1`` to see every traceback. SIGTERM ends a run like
Ctrl-C, so an ephemeral Prefect server started for it is stopped too.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import re
import signal
import sys
import threading
import traceback
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from dag_core.errors import DagError

ROOT = Path(__file__).resolve().parents[1]
# The params groups: one per DVC stage (dvc.yaml order), plus shared YAML-anchor groups.
STAGE_GROUPS = (
    "base_model",
    "label_subset",
    "train_heads",
    "probe_heads",
    "train_prior",
    "synthesize",
    "reference",
    "dfid",
    "sweep",
    "downstream",
)
SHARED_GROUPS = ("depth_norm", "runtime")
ANTICIPATED: tuple[type[BaseException], ...] = (DagError, OSError)


def debug_enabled() -> bool:
    """Whether ``DAG_DEBUG`` asks for full tracebacks."""
    return os.environ.get("DAG_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def load_params(path: str | Path, section: str) -> dict[str, Any]:
    """Return ``params[section]`` from a params.yaml file.

    DagError if the file is missing or not YAML, if it has top-level keys that are neither a
    stage group nor a shared group (a misspelt group), or if ``section`` itself is absent.
    """
    p = Path(path)
    if not p.is_file():
        raise DagError(f"params file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise DagError(f"params file {p} is not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DagError(f"params file {p} cannot be read: {exc}") from exc
    if not isinstance(data, Mapping):
        raise DagError(f"params file {p} must be a mapping of stage groups, got {data!r}")
    known = (*STAGE_GROUPS, *SHARED_GROUPS, *([] if section in STAGE_GROUPS else [section]))
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise DagError(
            f"unknown top-level key(s) {', '.join(unknown)} in {p}; expected stage groups "
            f"{', '.join(known)}"
        )
    if section not in data:
        raise DagError(f"params group '{section}' not found in {p} (no built-in defaults are used)")
    group = data[section]
    if group is None:
        group = {}
    if not isinstance(group, Mapping):
        raise DagError(f"params group '{section}' in {p} must be a mapping, got {group!r}")
    return dict(group)


def check_runtime(runtime: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a stage's ``runtime`` group (device available, known settings) before any output
    is touched; returns it as a plain dict for the stage's tasks."""
    from dag_core.runtime import RuntimeConfig

    RuntimeConfig.from_params(runtime).resolve_device()
    return dict(runtime or {})


def _coerce(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def flow_kwargs(fn: Callable[..., Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Check names and types against the flow signature: a typo or wrong type is an error.

    Types are checked strictly with pydantic (no ``"3"`` → 3, no ``true`` → 1), before any run.
    """
    from pydantic import TypeAdapter, ValidationError

    target = getattr(fn, "fn", fn)
    sig = inspect_signature(target)
    unknown = sorted(set(params) - set(sig))
    if unknown:
        raise DagError(
            f"unknown parameter(s) {', '.join(unknown)} for flow '{getattr(fn, 'name', fn)}'; "
            f"expected some of: {', '.join(sig)}"
        )
    hints = typing.get_type_hints(target)
    for name, value in params.items():
        if name not in hints:
            continue
        try:
            TypeAdapter(hints[name]).validate_python(value, strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "".join(f"[{part!r}]" for part in first["loc"])
            raise DagError(
                f"parameter {name}{where}={first['input']!r}: {first['msg'].lower()} "
                f"(expected {_type_name(hints[name])})"
            ) from None
    return dict(params)


def inspect_signature(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The parameters of ``fn`` by name."""
    return dict(inspect.signature(fn).parameters)


_TEMPLATE = re.compile(r"\$\{(\w+)\.(\w+)\}")


def output_keys(section: str) -> list[str]:
    """The parameters of ``section`` that dvc.yaml declares as outputs (outs, metrics, plots)."""
    dvc = ROOT / "dvc.yaml"
    if not dvc.is_file():
        return []
    stage = (yaml.safe_load(dvc.read_text()).get("stages") or {}).get(section) or {}
    keys: list[str] = []
    for kind in ("outs", "metrics", "plots"):
        for entry in stage.get(kind) or []:
            text = next(iter(entry)) if isinstance(entry, Mapping) else str(entry)
            for group, key in _TEMPLATE.findall(text):
                if group == section and key not in keys:
                    keys.append(key)
    return keys


def check_writable(value: str | os.PathLike[str], what: str) -> None:
    """DagError unless ``value`` can be created or replaced: its nearest existing ancestor is a
    writable folder, and nothing in the way is a file where a folder is needed."""
    path = Path(value)
    probe = path if path.exists() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        if probe == path:  # the output itself exists as a file or other entry
            probe = path.parent
        else:
            raise DagError(f"{what}={value}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DagError(f"{what}={value}: folder {probe} is not writable")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise DagError(f"{what}={value}: folder {path} is not writable")


def check_outputs(section: str, params: Mapping[str, Any]) -> None:
    """Check every output path of ``section`` (as named in dvc.yaml) before anything runs."""
    for key in output_keys(section):
        value = params.get(key)
        if value is None:
            continue
        if not isinstance(value, str | os.PathLike) or not str(value).strip():
            raise DagError(f"{key}={value!r} is not a path")
        if key.endswith("_file") and Path(value).is_dir():
            raise DagError(f"{key}={value}: is a folder, expected a file")
        check_writable(value, key)


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
            msg.startswith("Finished in state Failed")
            and any(n in msg for n in ("DagError", "OSError", "Error: [Errno"))
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


def run_cli(body: Callable[[], Any]) -> Any:
    """Run ``body`` as a command: anticipated errors → one ``error:`` line and exit status 2
    (or the error's own ``exit_code``, e.g. 1 for an interrupted run that a rerun resumes).

    SIGTERM is turned into KeyboardInterrupt so context managers and atexit hooks (the ephemeral
    Prefect server's shutdown) run; the process then exits with 128 + 15.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm)
    try:
        with quiet_prefect_console():
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


def run_stage(fn: Callable[..., Any], section: str, argv: list[str] | None = None) -> Any:
    """Entry point used by each ``flows/<stage>.py`` ``__main__``."""
    parser = argparse.ArgumentParser(prog=f"python -m flows.{section}", description=fn.__doc__)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: params.yaml)"
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the stage's params")
    args = parser.parse_args(argv)

    def body() -> Any:
        params = load_params(args.params, section)
        for item in args.overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise DagError(f"override '{item}' is not of the form key=value")
            params[key] = _coerce(value)
        return fn(**checked_kwargs(fn, section, params))

    return run_cli(body)


def check_input_datasets(section: str, params: Mapping[str, Any]) -> None:
    """Every shard dataset a stage's params point at (not its outputs) must be whole.

    A path value (or a path inside a mapping or list value) that is a folder holding shard
    datasets — itself or up to two levels down, e.g. ``data/labelled`` or ``data/synthetic`` — is
    checked against its manifests, checksums included (:func:`dag_core.shards.dataset_problems`).
    """
    from dag_core.shards import dataset_problems, find_datasets

    outputs = set(output_keys(section))
    for key, value in params.items():
        if key in outputs:
            continue
        if isinstance(value, Mapping):
            items = list(value.values())
        else:
            items = list(value) if isinstance(value, list | tuple) else [value]
        for item in items:
            if not isinstance(item, str) or not item or not Path(item).is_dir():
                continue
            for directory in find_datasets(item, max_depth=2):
                problems = dataset_problems(directory)
                if problems:
                    raise DagError(f"{key}: {problems[0]}")


def checked_kwargs(
    fn: Callable[..., Any], section: str, params: Mapping[str, Any], *, inputs: bool = True
) -> dict:
    """Names, types, output paths and (``inputs``) input datasets of one stage's params, checked
    before it runs (defaults included)."""
    kwargs = flow_kwargs(fn, params)
    if "runtime" in kwargs:  # device checked before a Prefect run (or its server) starts
        check_runtime(kwargs["runtime"])
    full = {**_defaults(fn), **kwargs}
    check_outputs(section, full)
    if inputs:
        check_input_datasets(section, full)
    return kwargs


def _defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect_signature(getattr(fn, "fn", fn)).items()
        if p.default is not inspect.Parameter.empty
    }
