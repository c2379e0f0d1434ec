"""What a model folder says about itself, read from its JSON files and file headers only (no
torch, no weights).

Enough for the cheap compatibility checks of a stage's params before anything starts: a folder
is there and is the kind of model a parameter names (a base model's config is a pixel-space
``UNet2DModel``, not e.g. a VAE's ``AutoencoderKL``), the base model's noise schedule has at
least as many steps as asked for, the heads were trained under the base model's T, the depth
prior's τ range fits its schedule, heads and prior share a depth normalisation, and the weights
files of heads and depth nets are whole by their safetensors headers. These checks are the
loaders' own (:mod:`dag_core.filechecks`). What needs the weights (the heads' layer widths
against the U-Net, the pinned hash) is checked when the stage loads them. The file names are
those of :mod:`dag_core.backbone`, :mod:`dag_core.heads`, :mod:`dag_core.prior` and
:mod:`dag_core.downstream` (a test keeps them equal).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dag_core.errors import ParamError
from dag_core.filechecks import FileProblem, check_safetensors, check_unet_config

POINTER_FILE = "pretrained.json"
HEADS_META = "heads.json"
HEADS_WEIGHTS = "heads.safetensors"
PRIOR_META = "prior.json"
DEPTH_NET_META = "depth_net.json"
DEPTH_NET_WEIGHTS = "depth_net.safetensors"
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


def _weights(path: Path, key: str, value: Any) -> None:
    """The weights file beside a model's metadata is there and whole by its safetensors header
    (the check its loader runs first, :func:`dag_core.filechecks.check_safetensors`)."""
    if not path.is_file():
        raise ParamError(key, value, f"has no weights file {path.name}")
    try:
        check_safetensors(path)
    except FileProblem as exc:
        raise ParamError(key, value, f"corrupt weights: {exc}") from None


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


def hub_cache() -> Path:
    """The Hugging Face hub cache folder (``HF_HUB_CACHE``, ``HF_HOME``/hub, or the default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "huggingface" / "hub"


def hub_cached(repo_id: str) -> bool:
    """Whether model ``owner/name`` has a snapshot in the hub cache (read without
    huggingface_hub: ``models--owner--name/snapshots/<revision>/``)."""
    snapshots = hub_cache() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(p.is_dir() and any(p.iterdir()) for p in snapshots.iterdir())


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub (``HF_ENDPOINT``, default https://huggingface.co) cannot be reached, or None
    when a connection opens (or a proxy is configured, which this cannot judge)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as exc:
        return f"{url.scheme}://{url.netloc}: {exc.strerror or exc}"
    return None


def check_hub_model(key: str, value: str) -> None:
    """A hub id can be loaded: it is in the hub cache, or the hub answers. Not cached and the
    hub unreachable (or ``HF_HUB_OFFLINE``): ParamError at once, instead of huggingface_hub's
    retries (six warnings over ~45 s). Cached but the hub unreachable: ``HF_HUB_OFFLINE=1`` is
    set for this process (read when huggingface_hub loads), so the cache is used without
    retrying the hub."""
    offline = _truthy("HF_HUB_OFFLINE")
    if hub_cached(value):
        if not offline and hub_unreachable() is not None:
            os.environ["HF_HUB_OFFLINE"] = "1"
        return
    cache = hub_cache()
    if offline:
        raise ParamError(
            key, value, f"no such local folder, not in the hub cache {cache}, and HF_HUB_OFFLINE"
        )
    reason = hub_unreachable()
    if reason is not None:
        raise ParamError(
            key,
            value,
            f"no such local folder, not in the hub cache {cache}, and the hub cannot be "
            f"reached ({reason})",
        )


def base_model_timesteps(key: str, value: str) -> int | None:
    """T of the base model at ``value`` (a folder, a pinned pointer folder, or a hub id: None,
    not known without downloading). ParamError if a local folder holds no diffusers U-Net, or
    a hub id can neither come from the cache nor from the hub (:func:`check_hub_model`)."""
    path = Path(value)
    if not path.is_dir():
        if _hub_id(value):
            check_hub_model(key, value)
            return None  # T is read when the stage loads it
        raise ParamError(key, value, "folder not found (run stage base_model first)")
    pointer = path / POINTER_FILE
    if pointer.is_file():
        target = _json(pointer, key, value).get("pretrained")
        if not isinstance(target, str) or not target or Path(target).resolve() == path.resolve():
            raise ParamError(key, value, f"{pointer} does not point at a model")
        return base_model_timesteps(key, target)
    unet_dir = path / "unet" if (path / "unet" / "config.json").is_file() else path
    if not (unet_dir / "config.json").is_file():
        raise ParamError(
            key, value, "holds no diffusers U-Net (expected unet/config.json or config.json)"
        )
    try:  # the loader's own check (a VAE folder holds an AutoencoderKL)
        check_unet_config(_json(unet_dir / "config.json", key, value), unet_dir)
    except FileProblem as exc:
        raise exc.param_error(key, value) from None
    return _timesteps(path / "scheduler", key, value)


def heads_info(key: str, value: str) -> dict[str, Any]:
    """The record of the depth heads at ``value`` (``heads.json``: T, resolution, norm)."""
    path = _folder(key, value, "train_heads")
    if not (path / HEADS_META).is_file():
        raise ParamError(key, value, f"holds no depth heads (no {HEADS_META})")
    info = _json(path / HEADS_META, key, value)
    _weights(path / HEADS_WEIGHTS, key, value)
    return info


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
    _weights(path / DEPTH_NET_WEIGHTS, key, value)
