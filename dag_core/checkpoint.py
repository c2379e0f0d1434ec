"""Read a model folder ``<name>.json`` + ``<name>.safetensors`` with one error line per failure.

The depth heads (:mod:`dag_core.heads.model`) and the downstream depth nets
(:mod:`dag_core.depthnet.persistence`) are saved the same way: metadata (config, depth
normalisation, format version) as JSON beside the weights as safetensors. Loading either goes
through these three steps, so a missing file, damaged metadata and damaged weights give the same
kind of :class:`~dag_core.errors.DagError` naming the file, whatever the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from dag_core.errors import DagError
from dag_core.filechecks import FileProblem, check_safetensors

T = TypeVar("T")


def model_files(
    directory: str | Path, meta_file: str, weights_file: str, kind: str
) -> tuple[Path, Path]:
    """The metadata and weights paths in ``directory``; a missing one raises, naming it."""
    directory = Path(directory)
    paths = directory / meta_file, directory / weights_file
    for path in paths:
        if not path.is_file():
            raise DagError(f"missing {kind} file {path}")
    return paths


def read_meta(meta_path: Path, kind: str, build: Callable[[dict[str, Any]], T]) -> T:
    """``build(meta)`` of the JSON at ``meta_path``; malformed JSON or fields raise one line."""
    try:
        return build(json.loads(meta_path.read_text()))
    except DagError as exc:
        raise DagError(f"invalid {kind} metadata {meta_path}: {exc}") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DagError(f"corrupt {kind} metadata {meta_path}: {exc!r}") from exc


def load_weights(module: nn.Module, weights_path: Path, kind: str) -> None:
    """Load ``weights_path`` into ``module`` (strict); damaged or mismatched weights raise."""
    try:
        check_safetensors(weights_path)
    except FileProblem as exc:
        raise DagError(f"corrupt {kind} weights {weights_path}: {exc.reason}") from None
    try:
        module.load_state_dict(load_file(weights_path))
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise DagError(f"corrupt {kind} weights {weights_path}: {first}") from exc
