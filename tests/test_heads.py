"""Depth heads MLP-S / MLP-W (dag_core.heads): shapes, gradients, checkpoints, training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.features import FeatureExtractor, upsample_concat
from dag_core.heads import (
    DepthHead,
    DepthHeads,
    HeadConfig,
    HeadEnsemble,
    member_seed,
    predict_depth,
    random_batches,
    train_heads,
)
from dag_core.probe import accuracy_vs_t
from dag_core.resize import upsample_concat_matrix
from dag_core.unet_configs import CHURCH_256_SCHEDULER, tiny_unet

REPO = Path(__file__).resolve().parents[1]

# high-resolution layers carry per-pixel signal even with the random weights of the test U-Net
TEST_CONFIG = HeadConfig(
    strong_blocks=(9, 12, 15),
    weak_blocks=(17,),
    hidden=(32, 16),
    time_dim=16,
    steps=40,
    batch_size=4,
    pixels_per_image=256,
    lr=3e-3,
    t_max=100,
)


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth grey images whose brightness determines depth (0.5 m … 4.5 m)."""
    low = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    brightness = F.interpolate(low, 32, mode="bilinear", align_corners=False)
    return (brightness * 2 - 1).expand(-1, 3, -1, -1).clone(), 0.5 + 4 * brightness


@pytest.fixture(scope="module")
def trained(unet, scheduler):
    images, depths = synthetic(32, seed=0)
    return train_heads(
        unet,
        scheduler,
        random_batches(images, depths, 4),
        TEST_CONFIG,
        DepthNorm(),
        log=lambda _: None,
    )


def test_depth_head_shapes_and_time_conditioning() -> None:
    torch.manual_seed(0)
    head = DepthHead(12, hidden=(8, 4), time_dim=8).eval()
    g = torch.randn(2, 12, 5, 7)
    assert head(g, 3).shape == (2, 1, 5, 7)
    assert head(g[:, :, :, :1], torch.tensor([3, 3])).shape == (2, 1, 5, 1)
    assert torch.equal(head(g, 3), head(g, torch.tensor([3, 3])))
    assert not torch.allclose(head(g, 3), head(g, 800))


def test_heads_forward_and_gradient_to_x_t(unet) -> None:
    heads = DepthHeads(HeadConfig(), DepthNorm(), {2: 64, 4: 64, 5: 64, 6: 32, 7: 32}, 32).eval()
    assert heads.blocks == (2, 4, 5, 6, 7)
    x_t = torch.randn(2, 3, 32, 32, requires_grad=True)
    eps, d_strong, d_weak = predict_depth(unet, heads, x_t, torch.tensor([10, 20]))
    assert eps.shape == x_t.shape
    assert d_strong.shape == d_weak.shape == (2, 1, 32, 32)
    (d_strong - d_weak).square().mean().backward()  # a depth-consistency-like loss
    assert x_t.grad is not None and torch.isfinite(x_t.grad).all() and x_t.grad.abs().sum() > 0
    with pytest.raises(DagError, match="expected 5 feature maps"):
        heads([torch.zeros(1, 64, 2, 2)], 0)


def test_heads_forward_at_another_resolution_and_upsampling() -> None:
    """One forward for every caller (guidance at ``runtime.head_resolution``, deterministic
    resizes, probes): the same numbers as running each MLP on its own upsampled features."""
    torch.manual_seed(0)
    channels = {2: 8, 4: 8, 5: 8, 6: 4, 7: 4}
    heads = DepthHeads(HeadConfig(hidden=(8,), time_dim=8), DepthNorm(), channels, 16).eval()
    sizes = {2: 4, 4: 8, 5: 8, 6: 16, 7: 16}
    features = [torch.randn(2, channels[k], sizes[k], sizes[k]) for k in heads.blocks]
    by_block = dict(zip(heads.blocks, features, strict=True))
    t = torch.tensor([5, 50])
    for resolution, upsample in ((None, upsample_concat), (8, upsample_concat)):
        size = resolution or heads.resolution
        g_s = upsample([by_block[k] for k in heads.config.strong_blocks], size)
        g_w = upsample([by_block[k] for k in heads.config.weak_blocks], size)
        d_s, d_w = heads(features, t, resolution=resolution, upsample=upsample)
        assert d_s.shape == d_w.shape == (2, 1, size, size)
        assert torch.equal(d_s, heads.strong(g_s, t)) and torch.equal(d_w, heads.weak(g_w, t))
    d_s, d_w = heads(features, t, resolution=8, upsample=upsample_concat_matrix)
    g_w = upsample_concat_matrix([by_block[k] for k in heads.config.weak_blocks], 8)
    assert torch.equal(d_w, heads.weak(g_w, t))
    assert torch.allclose(d_s, heads(features, t, resolution=8)[0], atol=1e-5)


def test_training_learns(unet, scheduler, trained) -> None:
    heads, rows = trained
    assert len(rows) == TEST_CONFIG.steps and set(rows[0]) == {"step", "loss_s", "loss_w"}
    first = sum(r["loss_s"] for r in rows[:5]) / 5
    last = sum(r["loss_s"] for r in rows[-5:]) / 5
    assert last < 0.6 * first
    assert not heads.training and heads.resolution == 32

    # held-out: the strong head beats predicting the mean training depth everywhere
    norm = heads.norm
    images, depths = synthetic(8, seed=1)
    t = torch.full((8,), 10)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, d_strong, _ = predict_depth(unet, heads, scheduler.add_noise(images, noise, t), t)
    target = norm.normalize(depths)
    baseline = (norm.normalize(synthetic(32, seed=0)[1]).mean() - target).abs().mean()
    assert (d_strong - target).abs().mean() < 0.8 * baseline


def test_training_is_deterministic_in_seed(unet, scheduler) -> None:
    images, depths = synthetic(8, seed=0)
    config = HeadConfig(strong_blocks=(12,), weak_blocks=(15,), hidden=(8,), steps=3, batch_size=2)

    def run(seed: int) -> tuple[DepthHeads, list[dict]]:
        batches = random_batches(images, depths, 2, seed=seed)
        return train_heads(
            unet, scheduler, batches, replace(config, seed=seed), DepthNorm(), log=lambda _: None
        )

    (heads, rows), (again, rows_again), (_, other_rows) = run(0), run(0), run(1)
    assert rows_again == rows and other_rows != rows
    for a, b in zip(heads.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_every_pixel_mode_learns(unet, scheduler) -> None:
    """pixels_per_image=None regresses every pixel once per step (no random draws)."""
    images, depths = synthetic(32, seed=0)
    config = replace(TEST_CONFIG, pixels_per_image=None)
    _, rows = train_heads(
        unet, scheduler, random_batches(images, depths, 4), config, DepthNorm(), log=lambda _: None
    )
    first = sum(r["loss_s"] for r in rows[:5]) / 5
    last = sum(r["loss_s"] for r in rows[-5:]) / 5
    assert last < 0.6 * first
    _, sampled = train_heads(
        unet, scheduler, random_batches(images, depths, 4), TEST_CONFIG, DepthNorm(), log=str
    )
    assert rows[0]["loss_s"] != sampled[0]["loss_s"]  # another pixel set from step 0


@pytest.mark.parametrize("pixels", [2048, None])
def test_training_from_an_iterable_with_holes(unet, scheduler, pixels: int | None) -> None:
    images, depths = synthetic(4, seed=2)
    depths[:, :, :16] = 0.0  # NYU-style holes
    depths[1] = float("nan")  # an image without any label
    batches = [(images[:2], depths[:2]), (images[2:], depths[2:])]
    config = HeadConfig(
        strong_blocks=(15,),
        weak_blocks=(17,),
        hidden=(8,),
        steps=5,
        batch_size=2,
        pixels_per_image=pixels,
    )
    messages: list[str] = []
    heads, rows = train_heads(unet, scheduler, batches, config, DepthNorm(), log=messages.append)
    assert len(rows) == 5 and messages
    assert all(torch.isfinite(torch.tensor([r["loss_s"], r["loss_w"]])).all() for r in rows)
    assert all(torch.isfinite(p).all() for p in heads.state_dict().values())
    with pytest.raises(DagError, match="no training batches"):
        train_heads(unet, scheduler, [], config, DepthNorm())


def test_save_load_round_trip(tmp_path, unet, trained) -> None:
    heads, _ = trained
    heads.base_hash = "abc123"
    directory = heads.save(tmp_path / "heads")
    meta = json.loads((directory / "heads.json").read_text())
    assert meta["layer_channels"] == {"9": 32, "12": 16, "15": 16, "17": 16}
    assert meta["base_hash"] == "abc123" and meta["num_train_timesteps"] == 1000
    loaded = DepthHeads.load(directory)
    assert loaded.config == heads.config and loaded.norm == heads.norm
    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), FeatureExtractor(unet, heads.blocks) as extractor:
        _, features = extractor(x_t, 42)
        for a, b in zip(heads(features, 42), loaded(features, 42), strict=True):
            assert torch.equal(a, b)


def test_load_errors(tmp_path, trained) -> None:
    heads, _ = trained
    with pytest.raises(DagError, match="missing depth-head file"):
        DepthHeads.load(tmp_path / "nothing")
    directory = heads.save(tmp_path / "h")
    (directory / "heads.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DagError, match="corrupt depth-head weights"):
        DepthHeads.load(directory)
    heads.save(directory)
    (directory / "heads.json").write_text("{ truncated")
    with pytest.raises(DagError, match="corrupt depth-head metadata"):
        DepthHeads.load(directory)


def test_check_compatible(trained) -> None:
    heads, _ = trained
    heads.base_hash = "abc123"
    heads.check_compatible(tiny_unet(32), base_hash="abc123")
    with pytest.raises(DagError, match="decoder layer 9 has 64 channels"):
        heads.check_compatible(tiny_unet(32, channels=(16, 16, 64, 32, 64, 64)))
    with pytest.raises(DagError, match="base model hash def differs"):
        heads.check_compatible(tiny_unet(32), base_hash="def")
    far = DepthHeads(
        HeadConfig(strong_blocks=(20,), weak_blocks=(6,)), DepthNorm(), {20: 8, 6: 32}, 32
    )
    with pytest.raises(DagError, match=r"head block 20 out of range 0\.\.17"):
        far.check_compatible(tiny_unet(32))


def test_config_validation(unet, scheduler) -> None:
    with pytest.raises(DagError, match="pixels_per_image"):
        HeadConfig(pixels_per_image=0)
    with pytest.raises(DagError, match="weak_blocks"):
        HeadConfig(weak_blocks=())
    assert HeadConfig.from_dict(HeadConfig().to_dict()) == HeadConfig()
    with pytest.raises(DagError, match="out of range"):
        train_heads(unet, scheduler, [], HeadConfig(strong_blocks=(30,)), DepthNorm())


# --- ensembles of K strong heads (HeadConfig.ensemble) ------------------------------------------

ENSEMBLE_CONFIG = HeadConfig(
    strong_blocks=(12,),
    weak_blocks=(15,),
    hidden=(8,),
    time_dim=8,
    steps=3,
    batch_size=2,
    pixels_per_image=64,
)


def _train_small(ensemble: int) -> tuple[DepthHeads, list[dict]]:
    images, depths = synthetic(8, seed=0)
    unet, scheduler = tiny_unet(32, seed=0).eval(), DDPMScheduler(**CHURCH_256_SCHEDULER)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_heads(
            unet,
            scheduler,
            random_batches(images, depths, 2),
            replace(ENSEMBLE_CONFIG, ensemble=ensemble),
            DepthNorm(),
            log=lambda _: None,
        )
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def single_and_ensemble() -> tuple[tuple[DepthHeads, list[dict]], tuple[DepthHeads, list[dict]]]:
    return _train_small(1), _train_small(3)


def _saved_bytes(heads: DepthHeads, rows: list[dict], directory: Path) -> bytes:
    directory = heads.save(directory)
    files = b"".join((directory / n).read_bytes() for n in ("heads.safetensors", "heads.json"))
    return files + json.dumps(rows).encode()


def test_single_head_keeps_the_pre_ensemble_layout_and_is_reproducible(
    tmp_path, single_and_ensemble
) -> None:
    """K = 1 (the default) keeps the single-head layout (state-dict keys, log rows, config without
    an ``ensemble`` key, old folders load as K = 1), and training it again gives the same bytes.

    Byte equality is checked between two runs on this machine, not against a pinned digest: float
    results differ between CPUs (BLAS kernels), so a digest from one machine fails on another.
    """
    heads, rows = single_and_ensemble[0]
    assert isinstance(heads.strong, DepthHead) and heads.strong_members == [heads.strong]
    assert next(iter(heads.state_dict())) == "strong.layers.0.0.weight"
    assert set(rows[0]) == {"step", "loss_s", "loss_w"}
    again = _train_small(1)
    assert _saved_bytes(heads, rows, tmp_path / "a") == _saved_bytes(*again, tmp_path / "b")
    assert "ensemble" not in json.loads((tmp_path / "a" / "heads.json").read_text())["config"]
    assert DepthHeads.load(tmp_path / "a").config.ensemble == 1  # folders from before load as K = 1


def test_ensemble_trains_saves_loads_and_strong_is_the_member_mean(
    tmp_path, unet, single_and_ensemble
) -> None:
    (single, _), (heads, rows) = single_and_ensemble
    assert set(rows[0]) == {"step", "loss_s0", "loss_s1", "loss_s2", "loss_w"}
    assert len(heads.strong_members) == 3 and isinstance(heads.strong, HeadEnsemble)
    keys = list(heads.state_dict())
    assert keys[0] == "strong.members.0.layers.0.0.weight" and "strong.members.2.out.bias" in keys
    # member 0 starts where the single head starts and sees the same batches: it IS that head;
    # the weak head is the same too; the other members start from their own seeds
    for a, b in zip(
        single.strong.state_dict().values(),
        heads.strong_members[0].state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)
    for a, b in zip(
        single.weak.state_dict().values(), heads.weak.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    first = [m.out.weight for m in heads.strong_members]
    assert not torch.equal(first[1], first[2]) and not torch.equal(first[0], first[1])
    assert member_seed(0, 1) != member_seed(0, 2) and member_seed(0, 1) != member_seed(1, 1)

    directory = heads.save(tmp_path / "k3")
    assert json.loads((directory / "heads.json").read_text())["config"]["ensemble"] == 3
    loaded = DepthHeads.load(directory)
    assert loaded.config == heads.config and loaded.config.ensemble == 3
    for a, b in zip(heads.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), FeatureExtractor(unet, loaded.blocks) as extractor:
        _, features = extractor(x_t, 42)
        out = loaded.predict(features, 42)
        d_s, d_w = loaded(features, 42)
        g_s = upsample_concat([features[loaded.blocks.index(12)]], 32)
        each = [m(g_s, 42) for m in loaded.strong_members]
    assert out.members is not None and out.members.shape == (3, 2, 1, 32, 32)
    assert torch.equal(out.strong, d_s) and torch.equal(out.weak, d_w)
    assert torch.allclose(d_s, torch.stack(each).mean(0), atol=1e-6)
    for k in range(3):
        assert torch.equal(out.members[k], each[k])
    assert single.predict(features, 42).members is None

    # held-out accuracy: strong = the mean, plus one row per member
    images, depths = synthetic(4, seed=1)
    rows_t = accuracy_vs_t(
        unet, DDPMScheduler(**CHURCH_256_SCHEDULER), loaded, (images, depths), [0]
    )
    branches = [r["branch"] for r in rows_t]
    assert branches == ["strong", "weak", "strong_0", "strong_1", "strong_2"]


def test_ensemble_config() -> None:
    assert HeadConfig().ensemble == 1 and HeadConfig().to_dict()["ensemble"] == 1
    assert "ensemble" not in HeadConfig().record()
    assert HeadConfig(ensemble=4).record()["ensemble"] == 4
    with pytest.raises(DagError, match=r"HeadConfig.ensemble=0: must be >= 1"):
        HeadConfig(ensemble=0)
    with pytest.raises(DagError, match="at least 2 members"):
        HeadEnsemble([DepthHead(4, (4,), 8)])


def test_stage_tasks_record_members_and_train_time(tmp_path) -> None:
    """Stage train_heads with K = 2: the heads folder holds train_time.json (kept out of DVC's
    hash by .dvcignore) and metrics/heads.json adds each member's held-out scores; K = 1 writes
    the metrics keys it always did."""
    from diffusers import DDPMPipeline

    from dag_core.shards import Sample, write_dataset
    from tasks.heads import TRAIN_TIME_FILE, evaluate_heads, fit_heads

    base = str(tmp_path / "base")
    scheduler = DDPMScheduler(**CHURCH_256_SCHEDULER)
    DDPMPipeline(unet=tiny_unet(32, seed=0), scheduler=scheduler).save_pretrained(base)
    for split, seed in (("train", 0), ("heldout", 1)):
        images, depths = synthetic(4, seed)
        rgb = ((images + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        samples = [Sample(f"{split}-{i}", rgb[i], depths[i, 0].numpy()) for i in range(4)]
        write_dataset(tmp_path / "labelled" / split, samples)
    config = {**ENSEMBLE_CONFIG.to_dict(), "steps": 2}
    norm, runtime = DepthNorm().to_dict(), {"device": "cpu"}
    for k in (1, 2):
        out = tmp_path / f"heads-{k}"
        labelled = str(tmp_path / "labelled")
        fit_heads.fn(base, labelled, str(out), {**config, "ensemble": k}, norm, runtime)
        timing = json.loads((out / TRAIN_TIME_FILE).read_text())
        assert timing["train_seconds"] > 0 and (timing["steps"], timing["ensemble"]) == (2, k)
        metrics_file = tmp_path / f"heads-{k}.json"
        evaluate_heads.fn(
            base, labelled, str(out), [0, 50], str(metrics_file), str(tmp_path / "p.csv"), runtime
        )
        metrics = json.loads(metrics_file.read_text())
        keys = ["t", "strong", "weak", "mean_depth_baseline", "n_train", "n_heldout"]
        assert list(metrics) == keys + (["members"] if k > 1 else [])
        if k > 1:
            assert len(metrics["members"]) == 2 and set(metrics["members"][0]) == {
                "abs_rel",
                "delta1",
            }
    assert TRAIN_TIME_FILE in (REPO / ".dvcignore").read_text().split()


@pytest.mark.parametrize("ensemble", [1, 2])
def test_stopped_heads_training_resumes_from_its_snapshot_to_the_same_bytes(
    unet, scheduler, tmp_path: Path, ensemble: int
) -> None:
    """Stopped at step 4 of 6 (a snapshot after every step, random pixel draws on), the rerun
    continues after the last snapshot (the batches of steps 1-4 skipped) and saves exactly the
    heads and log rows of an uninterrupted run."""
    from dag_core.resumable import TrainState

    images, depths = synthetic(8, seed=0)
    config = replace(ENSEMBLE_CONFIG, steps=6, ensemble=ensemble)
    batches = random_batches(images, depths, 2)

    def train(
        batch_fn: Any, snapshot: TrainState | None = None, log: Any = lambda _: None
    ) -> tuple[DepthHeads, list[dict]]:
        return train_heads(
            unet, scheduler, batch_fn, config, DepthNorm(), log=log, snapshot=snapshot
        )

    clean = _saved_bytes(*train(batches), tmp_path / "clean")

    def stopping(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if step == 4:
            raise KeyboardInterrupt
        return batches(step)

    with pytest.raises(KeyboardInterrupt):
        train(stopping, TrainState(tmp_path / "state.pt", "run", every_s=0))
    logs: list[str] = []
    resumed = train(batches, TrainState(tmp_path / "state.pt", "run", every_s=0), logs.append)
    assert any("steps 1-4 from the saved state" in line for line in logs), logs
    assert _saved_bytes(*resumed, tmp_path / "resumed") == clean
