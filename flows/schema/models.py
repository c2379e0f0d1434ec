"""What a model folder says about itself, read from its JSON files only (no torch, no weights).

Enough for the cheap compatibility checks of a stage's params before anything starts: a folder
is there and is the kind of model a parameter names, the base model's noise schedule has at
least as many steps as asked for, the heads were trained under the base model's T, the depth
prior's τ range fits its schedule, heads and prior share a depth normalisation. What needs the
weights (the heads' layer widths against the U-Net, the pinned hash) is checked when the stage
loads them. The file names are those of :mod:`dag_core.backbone`, :mod:`dag_core.heads`,
:mod:`dag_core.prior` and :mod:`dag_core.downstream` (a test keeps them equal).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dag_core.errors import ParamError

POINTER_FILE = "pretrained.json"
HEADS_META = "heads.json"
PRIOR_META = "prior.json"
DEPTH_NET_META = "depth_net.json"
#: T of a base model folder without a scheduler (dag_core.unet_configs.CHURCH_256_SCHEDULER)
DEFAULT_TIMESTEPS = 1000


def _json(path: Path, key: str, value: Any) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParamError(
            key, value, f"unreadable model file {path} ({type(exc).__name__})"
        ) from None
    if not isinstance(data, dict):
        raise ParamError(key, value, f"model file {path} is not a JSON object")
    return data


def _timesteps(scheduler_dir: Path, key: str, value: Any) -> int:
    config = scheduler_dir / "scheduler_config.json"
    if not config.is_file():
        return DEFAULT_TIMESTEPS
    return int(_json(config, key, value).get("num_train_timesteps", DEFAULT_TIMESTEPS))


def _folder(key: str, value: Any, producer: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ParamError(key, value, "expected a path")
    path = Path(value)
    if not path.is_dir():
        raise ParamError(key, value, f"folder not found (run stage {producer} first)")
    return path


def _hub_id(text: str) -> bool:
    """Whether ``text`` can be a hub id (``owner/name``) rather than a missing local folder
    (the rule of :func:`dag_core.backbone.load_base_model`)."""
    path = Path(text)
    return not (
        text.count("/") != 1
        or text.startswith((".", "/", "~"))
        or bool(path.suffix)
        or path.parent.is_dir()
    )


def base_model_timesteps(key: str, value: str) -> int | None:
    """T of the base model at ``value`` (a folder, a pinned pointer folder, or a hub id: None,
    not known without downloading). ParamError if a local folder holds no diffusers U-Net."""
    path = Path(value)
    if not path.is_dir():
        if _hub_id(value):
            return None  # checked when the stage loads (downloads) it
        raise ParamError(key, value, "folder not found (run stage base_model first)")
    pointer = path / POINTER_FILE
    if pointer.is_file():
        target = _json(pointer, key, value).get("pretrained")
        if not isinstance(target, str) or not target or Path(target).resolve() == path.resolve():
            raise ParamError(key, value, f"{pointer} does not point at a model")
        return base_model_timesteps(key, target)
    if not ((path / "unet" / "config.json").is_file() or (path / "config.json").is_file()):
        raise ParamError(
            key, value, "holds no diffusers U-Net (expected unet/config.json or config.json)"
        )
    return _timesteps(path / "scheduler", key, value)


def heads_info(key: str, value: str) -> dict[str, Any]:
    """The record of the depth heads at ``value`` (``heads.json``: T, resolution, norm)."""
    path = _folder(key, value, "train_heads")
    if not (path / HEADS_META).is_file():
        raise ParamError(key, value, f"holds no depth heads (no {HEADS_META})")
    return _json(path / HEADS_META, key, value)


def prior_info(key: str, value: str) -> dict[str, Any]:
    """The record of the depth prior at ``value`` (``prior.json``) with its T."""
    path = _folder(key, value, "train_prior")
    if not (path / PRIOR_META).is_file():
        raise ParamError(key, value, f"holds no depth prior (no {PRIOR_META})")
    info = _json(path / PRIOR_META, key, value)
    info["num_train_timesteps"] = _timesteps(path / "scheduler", key, value)
    return info


def check_depth_net(key: str, value: str) -> None:
    """ParamError unless ``value`` is a depth network folder (``depth_net.json``)."""
    path = _folder(key, value, "reference")
    if not (path / DEPTH_NET_META).is_file():
        raise ParamError(key, value, f"holds no depth network (no {DEPTH_NET_META})")
