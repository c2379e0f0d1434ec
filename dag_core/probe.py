"""Accuracy probes for choosing the decoder layers S and W (paper Fig. 4a/4b, and accuracy vs t).

The paper picks S = {2, 4, 5, 6, 7} and W = {6} for the guided-diffusion bedroom model from how
well each decoder layer predicts depth. These probes reproduce that evidence for ANY diffusers
U-Net, so a user can choose S (the most accurate layers) and W (one good-but-weaker layer):

* :func:`probe_layers` — one single-layer head per decoder layer, trained together on one frozen
  U-Net forward per batch at a fixed t, scored on held-out pairs (Fig. 4a);
* :func:`probe_num_images` — held-out accuracy as a function of the number of labelled training
  images for a given block set (Fig. 4b, label efficiency);
* :func:`accuracy_vs_t` — both trained branches across timesteps (why the weak branch disagrees);
* :func:`mean_depth_baseline` — the constant-depth predictor every head must beat.

Data interface (``DepthData``): either a pair of tensors ``(images (N, 3, H, W) in [-1, 1], depths
(N, 1, R, R) in metres)`` or a sequence of per-sample pairs ``(image (3, H, W), depth (1, R, R) or
(R, R))``. Images are at the U-Net's resolution; depth pixels that are 0 or non-finite are holes.
Metrics are :func:`dag_core.metrics.depth.depth_metrics` (AbsRel, δ<1.25), in metres, per image,
averaged over the held-out set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torch import Tensor

from dag_core.atomic import save_figure
from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.features import (
    FeatureExtractor,
    check_blocks,
    decoder_layers,
    noise_images,
    upsample_concat,
)
from dag_core.heads import DepthHead, DepthHeads, HeadConfig, fit_pixel_heads, random_batches
from dag_core.metrics.depth import DepthMetricAccumulator

DepthData = tuple[Tensor, Tensor] | Sequence[tuple[Tensor, Tensor]]
#: ``(features by decoder layer, t) -> {name: normalised depth (B, 1, R, R)}``
Predictor = Callable[[Mapping[int, Tensor], Tensor], Mapping[str, Tensor]]


def as_tensors(data: DepthData) -> tuple[Tensor, Tensor]:
    """Normalise a ``DepthData`` to ``(images (N, 3, H, W), depths (N, 1, R, R))``."""
    if len(data) == 2 and isinstance(data[0], Tensor) and data[0].ndim == 4:
        images, depths = data
    else:
        if len(data) == 0:
            raise DagError("empty image-depth dataset")
        images = torch.stack([image for image, _ in data])
        depths = torch.stack([depth.reshape(1, *depth.shape[-2:]) for _, depth in data])
    if images.ndim != 4 or depths.ndim != 4 or depths.shape[1] != 1:
        raise DagError(
            f"expected images (N, 3, H, W) and depths (N, 1, R, R), got {tuple(images.shape)} "
            f"and {tuple(depths.shape)}"
        )
    if images.shape[0] != depths.shape[0] or images.shape[0] == 0:
        raise DagError(f"{images.shape[0]} images but {depths.shape[0]} depth maps")
    return images, depths


def _evaluate(
    unet: UNet2DModel,
    scheduler: Any,
    heldout: DepthData,
    t: int,
    blocks: Sequence[int],
    predict: Predictor,
    norm: DepthNorm,
    *,
    batch_size: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Held-out metrics per predictor output, on x_t ~ q(x_t | x_0) at timestep ``t``."""
    images, depths = as_tensors(heldout)
    generator = torch.Generator().manual_seed(seed)
    device = unet.device
    accumulators: dict[str, DepthMetricAccumulator] = {}
    with torch.no_grad(), FeatureExtractor(unet, blocks) as extractor:
        for start in range(0, images.shape[0], batch_size):
            x0 = images[start : start + batch_size].to(device=device, dtype=unet.dtype)
            gt = depths[start : start + batch_size].to(device=device, dtype=torch.float32)
            t_batch = torch.full((x0.shape[0],), t, dtype=torch.long, device=device)
            features = extractor.features(noise_images(scheduler, x0, t_batch, generator), t_batch)
            outputs = predict(dict(zip(blocks, features, strict=True)), t_batch)
            for name, pred in outputs.items():
                accumulator = accumulators.setdefault(
                    name, DepthMetricAccumulator(max_depth=norm.max_depth)
                )
                accumulator.update(norm.denormalize(pred.float()), gt)
    return {name: acc.compute() for name, acc in accumulators.items()}


def _scores(metrics: Mapping[str, float]) -> dict[str, float]:
    return {"abs_rel": float(metrics["abs_rel"]), "delta1": float(metrics["delta1"])}


def _concat_predictor(heads: Mapping[str, tuple[Sequence[int], DepthHead]], size: int) -> Predictor:
    """Predictor running each named head on the upsampled concatenation of its layers."""

    def predict(features: Mapping[int, Tensor], t: Tensor) -> dict[str, Tensor]:
        return {
            name: head(upsample_concat([features[k] for k in blocks], size), t)
            for name, (blocks, head) in heads.items()
        }

    return predict


def _new_head(channels: int, config: HeadConfig) -> DepthHead:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return DepthHead(channels, config.hidden, config.time_dim)


def probe_layers(
    unet: UNet2DModel,
    scheduler: Any,
    train: DepthData,
    heldout: DepthData,
    norm: DepthNorm,
    *,
    layers: Sequence[int] | None = None,
    t: int,
    config: HeadConfig,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Depth accuracy of each decoder layer on its own (paper Fig. 4a).

    One single-layer head per layer (``config.hidden``/``time_dim``/``steps``/``lr``...), all
    trained together at timestep ``t``; returns rows {"layer", "channels", "scale", "abs_rel",
    "delta1"} on ``heldout`` at the same t.
    """
    all_layers = decoder_layers(unet)
    chosen = tuple(range(len(all_layers))) if layers is None else tuple(int(k) for k in layers)
    check_blocks(all_layers, chosen)
    images, depths = as_tensors(train)
    heads = {str(k): ((k,), _new_head(all_layers[k].channels, config)) for k in chosen}
    fit_pixel_heads(
        unet,
        scheduler,
        random_batches(images, depths, config.batch_size, config.seed),
        heads,
        config,
        norm,
        timestep=t,
        log=log,
    )
    predict = _concat_predictor(heads, depths.shape[-1])
    metrics = _evaluate(
        unet,
        scheduler,
        heldout,
        t,
        chosen,
        predict,
        norm,
        batch_size=config.batch_size,
        seed=config.seed,
    )
    return [
        {
            "layer": k,
            "channels": all_layers[k].channels,
            "scale": all_layers[k].scale,
            **_scores(metrics[str(k)]),
        }
        for k in chosen
    ]


def probe_num_images(
    unet: UNet2DModel,
    scheduler: Any,
    train: DepthData,
    heldout: DepthData,
    norm: DepthNorm,
    *,
    ns: Sequence[int],
    blocks: Sequence[int],
    t: int,
    config: HeadConfig,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Held-out accuracy of a head on ``blocks`` trained on the first n images, n ∈ ``ns``
    (paper Fig. 4b); trained and evaluated at timestep ``t``. Rows {"n", "abs_rel", "delta1"}."""
    all_layers = decoder_layers(unet)
    blocks = tuple(int(k) for k in blocks)
    check_blocks(all_layers, blocks)
    images, depths = as_tensors(train)
    rows = []
    for n in ns:
        if not 1 <= n <= images.shape[0]:
            raise DagError(f"n = {n} training images requested, {images.shape[0]} available")
        head = _new_head(sum(all_layers[k].channels for k in blocks), config)
        fit_pixel_heads(
            unet,
            scheduler,
            random_batches(images[:n], depths[:n], config.batch_size, config.seed),
            {"head": (blocks, head)},
            config,
            norm,
            timestep=t,
            log=log,
        )
        predict = _concat_predictor({"head": (blocks, head)}, depths.shape[-1])
        metrics = _evaluate(
            unet,
            scheduler,
            heldout,
            t,
            blocks,
            predict,
            norm,
            batch_size=config.batch_size,
            seed=config.seed,
        )
        rows.append({"n": int(n), **_scores(metrics["head"])})
    return rows


def accuracy_vs_t(
    unet: UNet2DModel,
    scheduler: Any,
    heads: DepthHeads,
    heldout: DepthData,
    t_values: Sequence[int],
    *,
    batch_size: int = 4,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Held-out accuracy of MLP-S and MLP-W at each t; rows {"t", "branch", "abs_rel", "delta1"}.

    With an ensemble of K strong heads, ``strong`` is the members' mean (what guidance uses) and
    each member k adds rows of branch ``strong_<k>``.
    """
    heads.check_compatible(unet)
    heads.to(unet.device)
    blocks = heads.blocks
    was_training = heads.training
    heads.eval()
    branches = ["strong", "weak"]
    if heads.config.ensemble > 1:
        branches += [f"strong_{k}" for k in range(heads.config.ensemble)]

    def predict(features: Mapping[int, Tensor], t_batch: Tensor) -> dict[str, Tensor]:
        out = heads.predict([features[k] for k in blocks], t_batch)
        maps = {"strong": out.strong, "weak": out.weak}
        if out.members is not None:
            maps.update({f"strong_{k}": m for k, m in enumerate(out.members)})
        return maps

    rows = []
    try:
        for t in t_values:
            metrics = _evaluate(
                unet,
                scheduler,
                heldout,
                int(t),
                blocks,
                predict,
                heads.norm,
                batch_size=batch_size,
                seed=seed,
            )
            rows += [{"t": int(t), "branch": b, **_scores(metrics[b])} for b in branches]
    finally:
        heads.train(was_training)
    return rows


def accuracy_at_head_resolution(
    unet: UNet2DModel,
    scheduler: Any,
    heads: DepthHeads,
    heldout: DepthData,
    t_values: Sequence[int],
    resolution: int,
    *,
    batch_size: int = 4,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """:func:`accuracy_vs_t` with the heads evaluated at ``resolution``² and their depth upsampled
    (bilinear) to the heads' own size — the ``runtime.head_resolution`` lever of guidance — so
    its cost in depth accuracy is measured on the held-out pairs, same noise, same t."""
    if not 1 <= resolution <= heads.resolution:
        raise DagError(f"head resolution {resolution} must be in 1..{heads.resolution}")
    heads.check_compatible(unet)
    heads.to(unet.device).eval()
    size = heads.resolution

    def predict(features: Mapping[int, Tensor], t_batch: Tensor) -> dict[str, Tensor]:
        maps = heads([features[k] for k in heads.blocks], t_batch, resolution=resolution)
        return {
            name: F.interpolate(d, size=(size, size), mode="bilinear", align_corners=False)
            for name, d in zip(("strong", "weak"), maps, strict=True)
        }

    rows = []
    for t in t_values:
        metrics = _evaluate(
            unet,
            scheduler,
            heldout,
            int(t),
            heads.blocks,
            predict,
            heads.norm,
            batch_size=batch_size,
            seed=seed,
        )
        rows += [
            {"t": int(t), "branch": b, "resolution": resolution, **_scores(metrics[b])}
            for b in ("strong", "weak")
        ]
    return rows


def mean_depth_baseline(
    train_depths: Tensor, heldout: DepthData, *, max_depth: float = 10.0
) -> dict[str, float]:
    """Metrics of predicting the mean valid training depth everywhere: {"mean_depth", ...}."""
    valid = DepthNorm.valid(train_depths)
    if not valid.any():
        raise DagError("training depths contain no valid pixel")
    mean = float(train_depths[valid].double().mean())
    _, depths = as_tensors(heldout)
    accumulator = DepthMetricAccumulator(max_depth=max_depth)
    accumulator.update(torch.full_like(depths, mean, dtype=torch.float32), depths.float())
    return {"mean_depth": mean, **_scores(accumulator.compute())}


def plot_probes(
    layer_rows: Sequence[Mapping[str, Any]],
    n_rows: Sequence[Mapping[str, Any]],
    t_rows: Sequence[Mapping[str, Any]],
    path: str | Path,
) -> Path:
    """One PNG: AbsRel (top) and δ1 (bottom) vs decoder layer, #training images, and t."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), squeeze=False)
    panels = [
        ("decoder layer k", {"all": layer_rows}, "layer"),
        ("# training images", {"head": n_rows}, "n"),
        (
            "timestep t",
            {b: [r for r in t_rows if r["branch"] == b] for b in ("strong", "weak")},
            "t",
        ),
    ]
    for column, (xlabel, series, key) in enumerate(panels):
        for row, metric in enumerate(("abs_rel", "delta1")):
            ax = axes[row][column]
            drawn = False
            for label, rows in series.items():
                if rows:
                    points = sorted((r[key], r[metric]) for r in rows)
                    ax.plot(*zip(*points, strict=True), marker="o", label=label)
                    drawn = True
            if not drawn:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            if key == "n" and drawn:
                ax.set_xscale("log")
            if key == "layer":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(xlabel)
            ax.set_ylabel("AbsRel ↓" if metric == "abs_rel" else "δ<1.25 ↑")
            ax.grid(alpha=0.3)
            if len(series) > 1 and drawn:
                ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path
