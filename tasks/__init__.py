"""Thin Prefect tasks: paths and small values in, paths out.

No tensors cross Prefect, nothing is persisted by Prefect (DVC owns caching): every task is made
with :func:`stage_task`, which turns result persistence and Prefect's input-hash cache off.
"""

from __future__ import annotations

# process defaults (dag_core.process: PREFECT_HOME, OMP_WAIT_POLICY, ...) before prefect/torch
import dag_core.process  # noqa: F401

# isort: split
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

F = TypeVar("F", bound=Callable[..., Any])


def stage_task(fn: F) -> F:
    """Decorate a pipeline task: no result persistence, no input-hash caching, prints logged."""
    return task(fn, persist_result=False, cache_policy=NO_CACHE, log_prints=True)  # type: ignore[return-value]


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run; a plain logger when a task body is called directly."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("dag")


C = TypeVar("C")


def config_from_params(cls: type[C], params: dict[str, Any], what: str) -> C:
    """Build a config dataclass (a :class:`dag_core.validation.Checked`) from a params.yaml
    mapping: lists become tuples; unknown keys and bad values are one-line errors naming the
    class and field (``HeadConfig.steps=0: must be >= 1``; ``what`` is kept for callers)."""
    return cls.from_params(params)  # type: ignore[attr-defined]
