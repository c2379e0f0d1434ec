"""Accuracy probes for choosing S and W (dag_core.probe) on a tiny church-layout U-Net."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.heads import HeadConfig, random_batches, train_heads
from dag_core.probe import (
    accuracy_vs_t,
    as_tensors,
    mean_depth_baseline,
    plot_probes,
    probe_layers,
    probe_num_images,
)

CONFIG = HeadConfig(hidden=(16,), time_dim=8, steps=30, batch_size=4, pixels_per_image=256, lr=3e-3)


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth grey images whose brightness determines depth (0.5 m … 4.5 m)."""
    low = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    brightness = F.interpolate(low, 32, mode="bilinear", align_corners=False)
    return (brightness * 2 - 1).expand(-1, 3, -1, -1).clone(), 0.5 + 4 * brightness


def quiet(_: str) -> None:
    pass


def valid_scores(row: dict) -> bool:
    return math.isfinite(row["abs_rel"]) and row["abs_rel"] >= 0 and 0 <= row["delta1"] <= 1


def test_probes_and_plot(tmp_path, unet, scheduler) -> None:
    train, heldout = synthetic(24, seed=0), synthetic(6, seed=1)
    baseline = mean_depth_baseline(train[1], heldout)

    layer_rows = probe_layers(
        unet,
        scheduler,
        train,
        heldout,
        DepthNorm(),
        layers=[2, 12, 15],
        t=10,
        config=CONFIG,
        log=quiet,
    )
    assert [r["layer"] for r in layer_rows] == [2, 12, 15]
    assert [r["scale"] for r in layer_rows] == [16, 2, 1]
    assert all(valid_scores(r) for r in layer_rows)
    # the full-resolution layers resolve the brightness → depth map; the mean cannot
    assert min(r["abs_rel"] for r in layer_rows) < 0.85 * baseline["abs_rel"]

    n_rows = probe_num_images(
        unet,
        scheduler,
        train,
        heldout,
        DepthNorm(),
        ns=[2, 24],
        blocks=[12, 15],
        t=10,
        config=replace(CONFIG, steps=8),
        log=quiet,
    )
    assert [r["n"] for r in n_rows] == [2, 24] and all(valid_scores(r) for r in n_rows)
    assert n_rows[1]["abs_rel"] != n_rows[0]["abs_rel"]

    config = HeadConfig(
        strong_blocks=(12, 15),
        weak_blocks=(9,),
        hidden=(16,),
        time_dim=8,
        steps=5,
        batch_size=4,
        pixels_per_image=256,
        t_max=200,
    )
    heads, _ = train_heads(
        unet, scheduler, random_batches(*train, 4), config, DepthNorm(), log=quiet
    )
    t_rows = accuracy_vs_t(unet, scheduler, heads, heldout, [999, 10])
    assert [(r["t"], r["branch"]) for r in t_rows] == [
        (999, "strong"),
        (999, "weak"),
        (10, "strong"),
        (10, "weak"),
    ]
    assert all(valid_scores(r) for r in t_rows)
    assert not heads.training

    path = plot_probes(layer_rows, n_rows, t_rows, tmp_path / "figs" / "probes.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = plot_probes(layer_rows, [], [], tmp_path / "partial.png")
    assert empty.stat().st_size > 0


def test_mean_depth_baseline() -> None:
    train = torch.tensor([1.0, 3.0, 0.0, float("nan")]).reshape(1, 1, 2, 2)  # holes ignored
    exact = (torch.zeros(2, 3, 4, 4), torch.full((2, 1, 4, 4), 2.0))
    result = mean_depth_baseline(train, exact)
    assert result["mean_depth"] == pytest.approx(2.0)
    assert result["abs_rel"] == pytest.approx(0.0) and result["delta1"] == pytest.approx(1.0)
    off = (torch.zeros(1, 3, 4, 4), torch.full((1, 1, 4, 4), 4.0))
    assert mean_depth_baseline(train, off)["abs_rel"] == pytest.approx(0.5)
    with pytest.raises(DagError, match="no valid pixel"):
        mean_depth_baseline(torch.zeros(1, 1, 2, 2), exact)


def test_data_interface_and_errors(unet, scheduler) -> None:
    images, depths = synthetic(3, seed=2)
    pairs = [(images[i], depths[i, 0]) for i in range(3)]  # per-sample, depth as (R, R)
    stacked = as_tensors(pairs)
    assert torch.equal(stacked[0], images) and torch.equal(stacked[1], depths)
    assert as_tensors((images, depths))[0] is images
    with pytest.raises(DagError, match="3 images but 2 depth maps"):
        as_tensors((images, depths[:2]))
    with pytest.raises(DagError, match=r"decoder layer 18 out of range"):
        probe_layers(unet, scheduler, pairs, pairs, DepthNorm(), layers=[18], t=5, config=CONFIG)
    with pytest.raises(DagError, match="n = 5 training images requested, 3 available"):
        probe_num_images(
            unet, scheduler, pairs, pairs, DepthNorm(), ns=[5], blocks=[15], t=5, config=CONFIG
        )
