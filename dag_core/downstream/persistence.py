"""Save and load a downstream depth network: ``depth_net.safetensors`` + ``depth_net.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dag_core.atomic import atomic_path, write_text_atomic
from dag_core.configs.downstream import DownstreamConfig
from dag_core.depthnorm import DepthNorm
from dag_core.downstream.model import DepthNet
from dag_core.errors import DagError

WEIGHTS_FILE = "depth_net.safetensors"
META_FILE = "depth_net.json"
FORMAT_VERSION = 1


def save_depth_net(
    model: DepthNet,
    config: DownstreamConfig,
    norm: DepthNorm,
    directory: str | Path,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``depth_net.safetensors`` and ``depth_net.json`` into ``directory`` (each file
    atomically); return it. ``training`` (e.g. the training set and the kept step) is recorded
    in the JSON as is."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, tmp)
    meta = {"format_version": FORMAT_VERSION, "config": config.to_dict(), "norm": norm.to_dict()}
    if training is not None:
        meta["training"] = training
    write_text_atomic(directory / META_FILE, json.dumps(meta, indent=2) + "\n")
    return directory


def load_depth_net(directory: str | Path) -> tuple[DepthNet, DownstreamConfig, DepthNorm]:
    """Rebuild a network saved by :func:`save_depth_net` (CPU, eval mode) with its config/norm."""
    directory = Path(directory)
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise DagError(f"missing depth-net file {path}")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise DagError(f"unsupported format_version {meta.get('format_version')!r}")
        config = DownstreamConfig.from_dict(meta["config"])
        norm = DepthNorm.from_dict(meta["norm"])
    except DagError as exc:
        raise DagError(f"invalid depth-net metadata {meta_path}: {exc}") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DagError(f"corrupt depth-net metadata {meta_path}: {exc!r}") from exc
    model = DepthNet(config.channels)
    try:
        model.load_state_dict(load_file(weights_path))
    except (SafetensorError, RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise DagError(f"corrupt depth-net weights {weights_path}: {first}") from exc
    return model.eval(), config, norm
