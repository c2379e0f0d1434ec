"""Downstream monocular depth estimation: train one depth network per training set, test on NYU.

The DAG paper (Kim et al., arXiv 2212.08861, Sec. 4, "Downstream task") measures the value of
depth-aware guided samples by training a monocular depth estimator on each synthetic dataset and
testing it on NYU-Depth v2. This module gives every training set the SAME network
(:class:`DepthNet`, a small conv–GroupNorm–SiLU U-Net), the SAME budget (exactly
``config.steps`` steps of ``config.batch_size`` samples, :class:`DownstreamConfig`) and the same
evaluation (:func:`evaluate`, the standard NYU metrics of :mod:`dag_core.metrics.depth`), so only
the data differs: the labelled subset, unguided samples, and DAG (DCG + DPG) samples.

Reading generated datasets into depth training — a dataset written by
:func:`dag_core.shards.write_dataset` (or by resumable synthesis) is a directory of Parquet shards,
streamed by :class:`dag_core.shards.ShardDataset` through a torch ``DataLoader``::

    from dag_core.depthnorm import DepthNorm
    from dag_core.downstream import DownstreamConfig, evaluate, save_depth_net, train_depth_net
    from dag_core.nyu import open_nyu

    norm, config = DepthNorm(), DownstreamConfig()
    model, log_rows = train_depth_net(["data/synthetic/dag"], config, norm)
    save_depth_net(model, config, norm, "models/depth_net_dag")
    print(evaluate(model, open_nyu("data/nyu2_test"), norm, config.resolution, eigen_crop=True))

Several directories are concatenated (``torch.utils.data.ChainDataset``) into one training set.
Each sample is resized so its short side is ``config.resolution`` and centre-cropped to a
``resolution × resolution`` square (depth resized with a validity mask, so holes stay holes); the
stream is shuffled with a seeded buffer, re-shuffled every pass, flipped horizontally at random and
cycled until ``config.steps`` full batches have been drawn. Training is deterministic in
``config.seed`` (single-process loading, seeded generators).

Losses (``config.loss``), both on valid pixels only (:meth:`DepthNorm.valid`):

* ``l1_log`` — L1 between predicted and true depth in the normalised space of
  :class:`DepthNorm` (log-depth for the default ``log`` normalisation);
* ``silog``  — the scale-invariant log loss of Eigen et al. (2014) on depth in metres,
  ``sqrt(mean(g²) − λ·mean(g)²)`` with ``g = log d̂ − log d`` and λ = 0.85.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from dag_core.configs.downstream import DownstreamConfig
from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.metrics.depth import DepthMetricAccumulator
from dag_core.shards import ShardDataset

WEIGHTS_FILE = "depth_net.safetensors"
META_FILE = "depth_net.json"
FORMAT_VERSION = 1
SILOG_LAMBDA = 0.85
SHUFFLE_BUFFER = 512
METRIC_LABELS = {
    "abs_rel": "AbsRel ↓",
    "sq_rel": "SqRel ↓",
    "rmse": "RMSE ↓",
    "rmse_log": "RMSE log ↓",
    "log10": "log10 ↓",
    "delta1": "δ<1.25 ↑",
    "delta2": "δ<1.25² ↑",
    "delta3": "δ<1.25³ ↑",
}


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide ``channels``."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ConvBlock(nn.Sequential):
    """Two (3×3 conv → GroupNorm → SiLU) layers."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            _group_norm(out_channels),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            _group_norm(out_channels),
            nn.SiLU(),
        )


class DepthNet(nn.Module):
    """Encoder–decoder U-Net: RGB in [-1, 1] (B, 3, H, W) → normalised depth (B, 1, H, W).

    Level ``i`` runs a :class:`ConvBlock` at ``channels[i]`` width and 1/2^i resolution (2×2
    average-pool between levels); the decoder upsamples bilinearly, concatenates the encoder skip
    of the same level and runs a :class:`ConvBlock`; a 1×1 conv gives one channel of depth in the
    space of :class:`DepthNorm`. Inputs whose sides are not multiples of :attr:`stride` are
    reflect-padded and the output cropped back.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        widths = [int(c) for c in channels]
        if not widths or any(c < 1 for c in widths):
            raise DagError(f"channels must be one or more positive widths, got {tuple(channels)}")
        self.stride = 2 ** (len(widths) - 1)
        self.encoder = nn.ModuleList(
            ConvBlock(c_in, c_out) for c_in, c_out in zip([3, *widths[:-1]], widths, strict=True)
        )
        self.decoder = nn.ModuleList(
            ConvBlock(widths[i + 1] + widths[i], widths[i])
            for i in reversed(range(len(widths) - 1))
        )
        self.out = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised depth for images ``x`` (B, 3, H, W) in [-1, 1], any H, W ≥ 1."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise DagError(f"DepthNet expects images (B, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.avg_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.out(x)[..., :h, :w]


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def resize_pair(image: Tensor, depth: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Resize an image (…, 3, H, W) bilinearly and its depth (…, 1, H, W) with a validity mask.

    Depth is averaged over valid pixels only; output pixels with less than half valid support are
    0 (invalid), so sensor holes are neither filled nor smeared into the labels.
    """
    image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
    valid = DepthNorm.valid(depth).to(depth.dtype)
    depth = torch.where(valid > 0, depth, torch.zeros_like(depth))
    kw: dict[str, Any] = {"size": size, "mode": "bilinear", "align_corners": False}
    num = F.interpolate(depth * valid, antialias=True, **kw)
    den = F.interpolate(valid, antialias=True, **kw)
    depth = torch.where(den > 0.5, num / den.clamp_min(1e-6), torch.zeros_like(num))
    return image, depth


def _square_transform(resolution: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """ShardDataset transform: short side → ``resolution``, centre crop to a square."""

    def transform(item: dict[str, Any]) -> dict[str, Any]:
        image, depth = item["image"], item["depth"]
        h, w = image.shape[-2:]
        if (h, w) != (resolution, resolution):
            scale = resolution / min(h, w)
            size = (max(resolution, round(h * scale)), max(resolution, round(w * scale)))
            image, depth = resize_pair(image[None], depth[None], size)
            top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
            crop = (..., slice(top, top + resolution), slice(left, left + resolution))
            image, depth = image[0][crop], depth[0][crop]
        return {"image": image.contiguous(), "depth": depth.contiguous()}

    return transform


class _ShuffledCycle(torch.utils.data.IterableDataset):
    """Endless stream over ``dataset``, shuffled per pass with a seeded buffer."""

    def __init__(self, dataset: torch.utils.data.IterableDataset, seed: int, buffer: int) -> None:
        super().__init__()
        self.dataset, self.seed, self.buffer = dataset, seed, buffer

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for epoch in itertools.count():
            rng = random.Random(self.seed * 1_000_003 + epoch)
            pool: list[dict[str, Any]] = []
            seen = 0
            for item in self.dataset:
                seen += 1
                pool.append(item)
                if len(pool) >= self.buffer:
                    yield pool.pop(rng.randrange(len(pool)))
            if not seen:
                raise DagError("training data yielded no samples")
            rng.shuffle(pool)
            yield from pool


def _loss(pred: Tensor, depth: Tensor, norm: DepthNorm, kind: str) -> Tensor:
    """``kind`` loss of normalised predictions ``pred`` against metric ``depth`` (valid pixels)."""
    valid = DepthNorm.valid(depth)
    if not valid.any():
        return pred.sum() * 0.0
    if kind == "l1_log":
        target = norm.normalize(torch.where(valid, depth, torch.ones_like(depth)))
        return (pred - target)[valid].abs().mean()
    g = norm.denormalize(pred)[valid].log() - depth[valid].clamp(norm.min_depth, None).log()
    return (g.square().mean() - SILOG_LAMBDA * g.mean().square()).clamp_min(1e-12).sqrt()


def train_depth_net(
    dataset_dirs: Sequence[str | Path],
    config: DownstreamConfig,
    norm: DepthNorm,
    *,
    log: Callable[[str], None] = print,
    device: str | torch.device = "cpu",
) -> tuple[DepthNet, list[dict[str, float]]]:
    """Train a :class:`DepthNet` for exactly ``config.steps`` steps on the shard datasets given.

    Trains on ``device``. Returns the network (eval mode, CPU) and one log row
    ``{"step", "loss"}`` per step. Raises :class:`DagError` naming a missing or empty dataset
    directory. Deterministic in ``config.seed``.
    """
    if isinstance(dataset_dirs, str | Path) or not dataset_dirs:
        raise DagError(
            f"dataset_dirs must be a non-empty list of directories, got {dataset_dirs!r}"
        )
    transform = _square_transform(config.resolution)
    datasets = [ShardDataset(d, transform=transform) for d in dataset_dirs]
    stream = _ShuffledCycle(torch.utils.data.ChainDataset(datasets), config.seed, SHUFFLE_BUFFER)
    loader = torch.utils.data.DataLoader(stream, batch_size=config.batch_size, num_workers=0)
    total = sum(len(d) for d in datasets)
    log(f"depth net: {total} training samples from {len(datasets)} dir(s), {config.steps} steps")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = DepthNet(config.channels).to(device)
    flips = torch.Generator().manual_seed(config.seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.steps, pct_start=0.1
    )
    model.train()
    rows: list[dict[str, float]] = []
    every = max(1, config.steps // 10)
    for step, batch in zip(range(1, config.steps + 1), loader, strict=False):
        image, depth = batch["image"], batch["depth"]
        flip = torch.rand(image.shape[0], generator=flips) < 0.5
        image = torch.where(flip[:, None, None, None], image.flip(-1), image)
        depth = torch.where(flip[:, None, None, None], depth.flip(-1), depth)
        image, depth = image.to(device), depth.to(device)
        loss = _loss(model(image), depth, norm, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        value = loss.item()
        rows.append({"step": step, "loss": value})
        if step % every == 0 or step == config.steps:
            log(f"depth net step {step}/{config.steps}: {config.loss} {value:.4f}")
    return model.cpu().eval(), rows


# ---------------------------------------------------------------------------------------------
# Inference and evaluation
# ---------------------------------------------------------------------------------------------


def inference_size(height: int, width: int, resolution: int, stride: int) -> tuple[int, int]:
    """Network input size: short side ``resolution``, aspect kept, both sides multiples of
    ``stride`` (rounded to the nearest, at least ``stride``)."""
    scale = resolution / min(height, width)
    return tuple(max(stride, round(s * scale / stride) * stride) for s in (height, width))


def predict_depth(model: DepthNet, rgb: np.ndarray, norm: DepthNorm, resolution: int) -> np.ndarray:
    """Metric depth (H, W) or (B, H, W) float32 for uint8 images (H, W, 3) or (B, H, W, 3).

    The image is resized to :func:`inference_size` (short side ``resolution``), the network's
    normalised prediction is resized bilinearly back to the input size, then mapped to metres.
    """
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise DagError(f"rgb must be uint8 (H, W, 3) or (B, H, W, 3), got {arr.dtype} {arr.shape}")
    batch = arr if arr.ndim == 4 else arr[None]
    h, w = batch.shape[1:3]
    device = next(model.parameters()).device
    image = torch.from_numpy(batch.copy()).to(device).permute(0, 3, 1, 2)
    image = image.float() / 127.5 - 1.0
    size = inference_size(h, w, resolution, model.stride)
    image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = model(image)
    model.train(was_training)
    pred = F.interpolate(pred, size=(h, w), mode="bilinear", align_corners=False)
    depth = norm.denormalize(pred)[:, 0].float().cpu().numpy()
    return depth if arr.ndim == 4 else depth[0]


def _as_pair(item: Any) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, depth) from a tuple or an object with ``.rgb``/``.depth`` (DepthPair, Sample)."""
    if hasattr(item, "rgb") and hasattr(item, "depth"):
        return np.asarray(item.rgb), np.asarray(item.depth)
    rgb, depth = item
    return np.asarray(rgb), np.asarray(depth)


def evaluate(
    model: DepthNet,
    pairs: Iterable[Any],
    norm: DepthNorm,
    resolution: int,
    *,
    eigen_crop: bool = False,
    median_scaling: bool = False,
) -> dict[str, float]:
    """Mean NYU depth metrics of ``model`` over ``pairs`` plus ``count``: the means of
    :func:`evaluate_per_image` (same arguments)."""
    return evaluate_per_image(
        model, pairs, norm, resolution, eigen_crop=eigen_crop, median_scaling=median_scaling
    ).compute()


def evaluate_per_image(
    model: DepthNet,
    pairs: Iterable[Any],
    norm: DepthNorm,
    resolution: int,
    *,
    eigen_crop: bool = False,
    median_scaling: bool = False,
) -> DepthMetricAccumulator:
    """NYU depth metrics of ``model`` on each of ``pairs``, at full ground-truth resolution.

    ``pairs``: (rgb uint8 (H, W, 3), depth metres (H, W)) tuples or objects with ``.rgb`` and
    ``.depth`` (:class:`dag_core.nyu.DepthPair`). Predictions come from :func:`predict_depth`.
    ``eigen_crop=True`` applies the Eigen et al. crop (:data:`dag_core.metrics.depth.EIGEN_CROP`),
    which is defined for 480×640 NYU frames only: any other image size raises :class:`DagError`
    (use it for NYU test pairs, not for synthetic or resized images). With no pairs,
    ``.compute()`` and ``.per_image()`` raise.
    ``median_scaling`` rescales each prediction by median(gt) / median(pred). Returns the metric
    means plus ``count`` (images) via ``.compute()``, and every image's metrics via
    ``.per_image()`` (paired comparisons: :func:`paired_comparison`).
    """
    acc = DepthMetricAccumulator(eigen_crop=eigen_crop, median_scaling=median_scaling)
    for item in pairs:
        rgb, depth = _as_pair(item)
        if rgb.shape[:2] != depth.shape:
            raise DagError(f"rgb shape {rgb.shape[:2]} != depth shape {depth.shape}")
        acc.update(predict_depth(model, rgb, norm, resolution), depth.astype(np.float32))
    return acc


#: metrics compared between training sets with CIs (lower-is-better AbsRel, higher-is-better δ1)
PAIRED_METRICS = ("abs_rel", "delta1")


def paired_comparison(
    per_image: Mapping[str, Mapping[str, np.ndarray]],
    reference: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Each training set's per-image metrics against ``reference``'s on the SAME test images:
    the mean difference (set − reference) with a bootstrap 95 % CI and a verdict (``lower`` /
    ``higher`` / ``no difference``, :func:`dag_core.metrics.effect.verdict`).

    Metric arrays are (N,) for one net per set, or (R, N) for R training runs per set (run r of
    every set shares its seed, so runs are paired too). With one run the CI covers only the
    choice of test images, and a difference can still be seed noise of that run; with R ≥ 2 it
    resamples runs and images (:func:`dag_core.metrics.effect.mean_bootstrap`).
    """
    from dag_core.metrics.effect import mean_bootstrap, verdict  # torch-fidelity on first use

    if reference not in per_image:
        raise DagError(
            f"paired reference {reference!r} is not a training set; have {', '.join(per_image)}"
        )
    out: dict[str, dict[str, Any]] = {}
    for name, values in per_image.items():
        if name == reference:
            continue
        row: dict[str, Any] = {}
        for metric in PAIRED_METRICS:
            diff = mean_bootstrap(
                values[metric], paired_with=per_image[reference][metric], n_boot=n_boot, seed=seed
            )
            row.update(diff.as_dict(f"{metric}_diff"))
            row[f"{metric}_verdict"] = verdict(diff)
        out[name] = row
    return out


# ---------------------------------------------------------------------------------------------
# Persistence and reporting
# ---------------------------------------------------------------------------------------------


def save_depth_net(
    model: DepthNet, config: DownstreamConfig, norm: DepthNorm, directory: str | Path
) -> Path:
    """Write ``depth_net.safetensors`` and ``depth_net.json`` into ``directory``; return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, directory / WEIGHTS_FILE)
    meta = {"format_version": FORMAT_VERSION, "config": config.to_dict(), "norm": norm.to_dict()}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
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


def markdown_table(
    results: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = ("abs_rel", "rmse", "delta1"),
) -> str:
    """A Markdown table, one row per training set (e.g. labelled, unguided, dag), 3 decimals."""
    if not results:
        raise DagError("markdown_table got no results")
    unknown = [m for m in metrics if m not in METRIC_LABELS]
    if unknown:
        raise DagError(f"unknown metric {unknown[0]!r}; expected one of {', '.join(METRIC_LABELS)}")
    lines = [
        "| training set | " + " | ".join(METRIC_LABELS[m] for m in metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for name, row in results.items():
        missing = [m for m in metrics if m not in row]
        if missing:
            raise DagError(f"results for {name!r} lack metric {missing[0]!r}")
        lines.append(f"| {name} | " + " | ".join(f"{float(row[m]):.3f}" for m in metrics) + " |")
    return "\n".join(lines) + "\n"
