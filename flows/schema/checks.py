"""Checks the stage schemas share: model folders against a stage's sampling settings, the
floor set's size, and which folders of a synthesis output are variants (no torch)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dag_core.errors import ParamError
from flows.schema import models
from flows.schema.base import dataset_rows


def synthetic_variants(root: str | Path) -> list[str]:
    """The variant folders of a synthesis output (``_report`` and other ``_`` names are not)."""
    path = Path(root)
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.is_dir() and p.name[:1] not in "._")


def same_path(a: Any, b: Any) -> bool:
    """Whether two path values name the same path (``./data/x/`` is ``data/x``)."""
    if not isinstance(a, str) or not isinstance(b, str):
        return a == b
    return os.path.normpath(a) == os.path.normpath(b)


def check_timesteps(key: Any, base_model: str, name: str, values: list[int]) -> None:
    """The base model exists and every timestep in ``values`` is below its T."""
    t = models.base_model_timesteps(key("base_model"), base_model)
    if t is not None and max(values) >= t:
        raise ParamError(key(name), max(values), f"must be < the base model's T = {t}")


def check_floor(key: str, floor: str, n: int) -> None:
    """The floor set holds at least ``n`` pairs (FID's bias depends on the count)."""
    rows = dataset_rows(floor)
    if rows < n:
        raise ParamError(key, floor, f"has {rows} images, fewer than the {n} generated")
