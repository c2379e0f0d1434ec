"""The frozen base diffusion model ε_θ (DAG paper §3: a pretrained pixel-space DDPM, never updated).

:func:`load_base_model` opens any pixel-space diffusers ``UNet2DModel`` with its scheduler — a
``DDPMPipeline`` folder (``unet/`` + ``scheduler/``), a bare U-Net folder, a folder holding a
:data:`POINTER_FILE` written by stage ``base_model``, or a hub id such as
``google/ddpm-bedroom-256`` (the paper's bedroom model). With no pretrained model the pipeline
trains a tiny DDPM on the procedural world (:func:`train_base_model`) with the church-256 block
layout (:mod:`dag_core.unet_configs`), so decoder-layer numbering matches the paper's models.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.training_utils import EMAModel
from PIL import Image

from dag_core.atomic import atomic_open, atomic_path, write_text_atomic
from dag_core.configs.backbone import TrainConfig
from dag_core.errors import DagError
from dag_core.filechecks import check_unet_config
from dag_core.sampling import make_scheduler
from dag_core.unet_configs import CHURCH_256_SCHEDULER, church_like_config

#: Written by stage ``base_model`` when a pretrained model is pinned instead of trained.
POINTER_FILE = "pretrained.json"
#: dtypes a trained base model may be saved in (:attr:`TrainConfig.weights_dtype`).
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class BaseModel:
    """A frozen U-Net ε_θ (eval mode, no gradients), its noise scheduler, and where it came from."""

    unet: UNet2DModel
    scheduler: SchedulerMixin
    source: str

    def __post_init__(self) -> None:
        self.unet.eval().requires_grad_(False)

    @property
    def resolution(self) -> int:
        """The U-Net's sample size (square images)."""
        return _sample_size(self.unet.config.sample_size)

    @property
    def in_channels(self) -> int:
        """Image channels the U-Net denoises (3 for pixel-space RGB)."""
        return int(self.unet.config.in_channels)


def _sample_size(size: Any) -> int:
    return int(size if isinstance(size, int) else size[0])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DagError(f"unreadable model config {path}: {exc.__class__.__name__}") from None
    if not isinstance(data, dict):
        raise DagError(f"model config {path} is not a JSON object")
    return data


def _unet_dir(folder: Path) -> Path:
    """The folder holding the U-Net config: ``unet/`` of a pipeline, or the folder itself."""
    if (folder / "unet" / "config.json").is_file():
        return folder / "unet"
    if (folder / "config.json").is_file():
        return folder
    raise DagError(f"no diffusers U-Net in {folder} (expected unet/config.json or config.json)")


def _pointer_target(pointer: Path) -> str:
    target = _read_json(pointer).get("pretrained")
    if not isinstance(target, str) or not target:
        raise DagError(f"{pointer} has no 'pretrained' entry")
    if Path(target).resolve() == pointer.parent.resolve():
        raise DagError(f"{pointer} points at its own folder")
    return target


def _is_missing_local(text: str) -> bool:
    """True when ``text`` cannot be a hub id (``owner/name``), so it names a missing folder."""
    path = Path(text)
    return (
        text.count("/") != 1
        or text.startswith((".", "/", "~"))
        or bool(path.suffix)
        or path.parent.is_dir()
    )


def load_base_model(path_or_id: str | Path, *, device: str | torch.device = "cpu") -> BaseModel:
    """Open a frozen base model from a local folder, a pointer folder, or a hub id.

    A pointer folder (stage ``base_model`` with ``pretrained`` set) is followed, and the loaded
    weights must still have the hash recorded when the model was pinned.
    """
    folder = Path(path_or_id)
    if folder.is_dir():
        pointer = folder / POINTER_FILE
        if pointer.is_file():
            model = load_base_model(_pointer_target(pointer), device=device)
            pinned = _read_json(pointer).get("hash")
            if pinned is not None and pinned != model_hash(model.unet):
                raise DagError(
                    f"{model.source} no longer has the weights pinned in {pointer} (hash {pinned})"
                )
            return model
        unet_dir = _unet_dir(folder)
        check_unet_config(_read_json(unet_dir / "config.json"), unet_dir)
        try:
            # low_cpu_mem_usage=False: the loading path diffusers takes anyway without
            # `accelerate`, asked for directly so that it does not print its install notice
            unet = UNet2DModel.from_pretrained(unet_dir, low_cpu_mem_usage=False)
        except (OSError, ValueError, RuntimeError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DagError(f"cannot load the U-Net in {unet_dir}: {first}") from None
        if (folder / "scheduler" / "scheduler_config.json").is_file():
            scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
        else:
            scheduler = DDPMScheduler.from_config(CHURCH_256_SCHEDULER)
        return BaseModel(unet.float().to(device), scheduler, str(folder))
    text = str(path_or_id)
    if _is_missing_local(text):
        raise DagError(f"base model folder not found: {text}")
    try:  # a hub id such as google/ddpm-bedroom-256
        check_unet_config(UNet2DModel.load_config(text, subfolder="unet"), text)
        unet = UNet2DModel.from_pretrained(text, subfolder="unet", low_cpu_mem_usage=False)
        scheduler = DDPMScheduler.from_pretrained(text, subfolder="scheduler")
    except DagError:
        raise
    except Exception as exc:  # hub errors come in many types; report one line
        raise DagError(
            f"cannot load base model '{text}' (no such local folder; hub download failed: "
            f"{exc.__class__.__name__})"
        ) from None
    return BaseModel(unet.float().to(device), scheduler, text)


def model_resolution(path_or_id: str | Path) -> int:
    """The model's sample size, read from its (or its pointer's) config without loading weights."""
    folder = Path(path_or_id)
    if folder.is_dir():
        pointer = folder / POINTER_FILE
        if pointer.is_file():
            size = _read_json(pointer).get("resolution")
            if size is None:
                return model_resolution(_pointer_target(pointer))
            return int(size)
        unet_dir = _unet_dir(folder)
        config = _read_json(unet_dir / "config.json")
        check_unet_config(config, unet_dir)
        return _sample_size(config["sample_size"])
    text = str(path_or_id)
    if _is_missing_local(text):
        raise DagError(f"base model folder not found: {text}")
    try:
        config = UNet2DModel.load_config(text, subfolder="unet")
    except Exception as exc:  # hub errors come in many types; report one line
        raise DagError(
            f"cannot read the config of base model '{text}' (no such local folder; hub download "
            f"failed: {exc.__class__.__name__})"
        ) from None
    check_unet_config(config, text)
    return _sample_size(config["sample_size"])


def model_hash(model: str | Path | torch.nn.Module) -> str:
    """16-hex SHA-256 over a model's state dict (names, dtypes, shapes, bytes), sorted by name.

    A path or hub id is loaded with :func:`load_base_model` and its U-Net hashed.
    """
    if not isinstance(model, torch.nn.Module):
        model = load_base_model(model).unet
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _check_batch(x0: torch.Tensor, config: TrainConfig) -> None:
    shape = (3, config.resolution, config.resolution)
    if x0.ndim != 4 or tuple(x0.shape[1:]) != shape or not x0.is_floating_point():
        raise DagError(
            f"base model batches must be float (B, {', '.join(map(str, shape))}) in [-1, 1], "
            f"got {x0.dtype} {tuple(x0.shape)}"
        )


#: U-Net config entries a warm start must share with the training config (besides weight shapes)
LAYOUT_KEYS = (
    "sample_size",
    "in_channels",
    "out_channels",
    "block_out_channels",
    "layers_per_block",
    "norm_num_groups",
    "down_block_types",
    "up_block_types",
)


def _plain(value: object) -> object:
    return list(value) if isinstance(value, list | tuple) else value


def _warm_start(unet: UNet2DModel, folder: str, num_train_timesteps: int) -> str:
    """Copy the weights of the model in ``folder`` into ``unet`` (same layout, else an error)."""
    source = load_base_model(folder)
    mine, theirs = unet.state_dict(), source.unet.state_dict()
    mismatch = sorted(
        k
        for k in mine.keys() | theirs.keys()
        if k not in mine or k not in theirs or mine[k].shape != theirs[k].shape
    )
    mismatch += [
        f"config {key}"
        for key in LAYOUT_KEYS
        if _plain(unet.config.get(key)) != _plain(source.unet.config.get(key))
    ]
    if source.scheduler.config.num_train_timesteps != num_train_timesteps:
        mismatch.append("scheduler num_train_timesteps")
    if mismatch:
        raise DagError(
            f"base model init_from {folder} has another layout than the training config "
            f"(first difference: {mismatch[0]})"
        )
    unet.load_state_dict(theirs)
    return model_hash(source.unet)


def train_base_model(
    batches: Callable[[int], torch.Tensor],
    out_dir: str | Path,
    config: TrainConfig,
    log: Callable[[str], None] = print,
    device: str | torch.device = "cpu",
) -> Path:
    """DDPM training (Ho et al. 2020: E‖ε − ε_θ(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t)‖²), EMA weights saved.

    ``batches(step)`` gives float images in [-1, 1] (B, 3, H, W). AdamW with linear warm-up and
    cosine decay; noise levels from diffusers' ``DDPMScheduler`` (church-256 linear β). Writes a
    ``DDPMPipeline`` folder (safetensors) holding the EMA U-Net, ``train_log.csv`` (step, loss),
    ``train_config.json`` and ``samples.png`` (DDIM preview grid) to ``out_dir``. Deterministic in
    ``config.seed`` for a deterministic ``batches``. Trains on ``device``; noise and timesteps
    are drawn on the CPU from the seed, so every device sees the same draws.
    """
    out = Path(out_dir)
    torch.manual_seed(config.seed)
    unet = UNet2DModel(
        **church_like_config(
            config.resolution, config.channels, norm_num_groups=config.norm_num_groups
        )
    )
    init_hash = None
    if config.init_from is not None:
        init_hash = _warm_start(unet, config.init_from, config.num_train_timesteps)
        log(f"base model warm start from {config.init_from} (hash {init_hash})")
    unet.to(device)
    ema = EMAModel(unet.parameters(), decay=config.ema_decay)
    scheduler = DDPMScheduler(
        **{**CHURCH_256_SCHEDULER, "num_train_timesteps": config.num_train_timesteps}
    )
    opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=0.0)
    lr_schedule = get_cosine_schedule_with_warmup(opt, config.warmup, config.steps)
    gen = torch.Generator().manual_seed(config.seed)
    every = max(1, config.steps // 20)
    rows: list[dict[str, float]] = []
    start = time.monotonic()
    unet.train()
    for step in range(config.steps):
        x0 = batches(step)
        if step == 0:
            _check_batch(x0, config)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, config.num_train_timesteps, (x0.shape[0],), generator=gen).to(device)
        x0 = x0.to(device)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr_schedule.step()
        ema.step(unet.parameters())
        value = loss.item()
        if not math.isfinite(value):
            raise DagError(f"base model training diverged at step {step} (loss {value}); lower lr")
        rows.append({"step": step, "loss": value})
        if step % every == 0 or step == config.steps - 1:
            recent = float(np.mean([r["loss"] for r in rows[-every:]]))
            log(
                f"base model step {step + 1}/{config.steps} loss {recent:.4f} "
                f"({time.monotonic() - start:.0f}s)"
            )
    ema.copy_to(unet.parameters())
    unet.eval()
    out.mkdir(parents=True, exist_ok=True)
    saved = unet.to(WEIGHT_DTYPES[config.weights_dtype])
    DDPMPipeline(unet=saved, scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    unet = saved.float()  # previews from the weights as saved (and reloaded)
    with atomic_open(out / "train_log.csv", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["step", "loss"])
        writer.writeheader()
        writer.writerows(rows)
    recorded = asdict(config) | ({"init_from_hash": init_hash} if init_hash else {})
    write_text_atomic(out / "train_config.json", json.dumps(recorded, indent=2) + "\n")
    if config.preview_samples:
        model = BaseModel(unet, scheduler, str(out))
        grid = sample_images(
            model, config.preview_samples, steps=config.preview_steps, seed=config.seed
        )
        save_grid(grid, out / "samples.png")
    log(f"base model trained in {time.monotonic() - start:.0f}s")
    return out


@torch.no_grad()
def sample_images(
    model: BaseModel,
    n: int,
    *,
    steps: int = 50,
    seed: int = 0,
    batch_size: int = 16,
    sampler: str = "ddim",
) -> torch.Tensor:
    """``n`` unguided samples from the base model as uint8 (n, H, W, 3), ``steps`` steps of
    DDIM (η = 0, ``sampler="ddim"``) or ancestral DDPM (``"ddpm"``: x_{t−1} ~ N(μ_θ, Σ_t)).

    Sample ``i`` draws its starting noise and every DDPM step's noise from its own seeded
    generator, so results do not depend on ``batch_size``.
    """
    if n < 1 or steps < 1 or batch_size < 1:
        raise DagError(
            f"sample_images needs n, steps, batch_size >= 1, got {n}, {steps}, {batch_size}"
        )
    scheduler = make_scheduler(model.scheduler, sampler, steps)
    device = next(model.unet.parameters()).device
    shape = (model.in_channels, model.resolution, model.resolution)
    out = []
    for first in range(0, n, batch_size):
        count = min(batch_size, n - first)
        gens = [torch.Generator().manual_seed(seed * 100_003 + first + j) for j in range(count)]
        x = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)
        for t in scheduler.timesteps:
            x = scheduler.step(model.unet(x, t).sample, t, x, generator=gens).prev_sample
        images = ((x[:, :3].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        out.append(images.permute(0, 2, 3, 1).cpu())
    return torch.cat(out)


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, nrow: int | None = None) -> Path:
    """Tile uint8 images (N, H, W, 3) into one PNG, ``nrow`` per row (default ⌈√N⌉), 2px gaps."""
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[0] == 0 or arr.shape[-1] not in (1, 3) or arr.dtype != np.uint8:
        raise DagError(f"save_grid needs uint8 images (N, H, W, 3), got {arr.dtype} {arr.shape}")
    n, h, w, c = arr.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        canvas[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + q * (w + 2) : 2 + q * (w + 2) + w] = arr[
            i
        ]
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())  # the temp name has no suffix
    if fmt is None:
        raise DagError(f"save_grid cannot tell an image format from the name {path.name!r}")
    with atomic_path(path) as tmp:
        Image.fromarray(canvas[..., 0] if c == 1 else canvas).save(tmp, format=fmt)
    return path
