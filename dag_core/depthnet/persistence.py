"""Save and load a downstream depth network: ``depth_net.safetensors`` + ``depth_net.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch

from dag_core.atomic import write_bytes_atomic, write_text_atomic
from dag_core.checkpoint import load_weights, model_files, read_meta
from dag_core.configs.downstream import DownstreamConfig
from dag_core.depthnet.model import DepthNet
from dag_core.depthnorm import DepthNorm
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
    # bytes first, then a Python write: an error is an OSError naming the file
    write_bytes_atomic(directory / WEIGHTS_FILE, safetensors.torch.save(state))
    meta = {"format_version": FORMAT_VERSION, "config": config.to_dict(), "norm": norm.to_dict()}
    if training is not None:
        meta["training"] = training
    write_text_atomic(directory / META_FILE, json.dumps(meta, indent=2) + "\n")
    return directory


def load_depth_net(directory: str | Path) -> tuple[DepthNet, DownstreamConfig, DepthNorm]:
    """Rebuild a network saved by :func:`save_depth_net` (CPU, eval mode) with its config/norm."""
    meta_path, weights_path = model_files(directory, META_FILE, WEIGHTS_FILE, "depth-net")
    config, norm = read_meta(meta_path, "depth-net", _parse_meta)
    model = DepthNet(config.channels)
    load_weights(model, weights_path, "depth-net")
    return model.eval(), config, norm


def _parse_meta(meta: dict[str, Any]) -> tuple[DownstreamConfig, DepthNorm]:
    if meta.get("format_version") != FORMAT_VERSION:
        raise DagError(f"unsupported format_version {meta.get('format_version')!r}")
    return DownstreamConfig.from_dict(meta["config"]), DepthNorm.from_dict(meta["norm"])
