"""Tests for dag_core.backbone: train → save → load round trips, pointers, sampling, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from PIL import Image
from safetensors import safe_open

from dag_core.backbone import (
    POINTER_FILE,
    BaseModel,
    TrainConfig,
    load_base_model,
    model_hash,
    model_resolution,
    sample_images,
    save_grid,
    train_base_model,
)
from dag_core.errors import DagError
from dag_core.features import decoder_layers
from dag_core.unet_configs import tiny_unet
from tests.numerics import assert_same_uint8_images_up_to_summation_order

TINY = {"channels": (8, 8, 16, 16, 16, 16), "batch_size": 2, "steps": 3, "preview_samples": 2}


def synthetic_batches(step: int) -> torch.Tensor:
    """Deterministic images in [-1, 1]: a vertical gradient plus step-dependent noise."""
    g = torch.Generator().manual_seed(step)
    ramp = torch.linspace(-1, 1, 32).view(1, 1, 32, 1).expand(2, 3, 32, 32)
    return (ramp + 0.1 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)


def train_tiny(out: Path, **overrides) -> Path:
    config = TrainConfig(**{**TINY, "preview_steps": 2, **overrides})
    return train_base_model(synthetic_batches, out, config, log=lambda _: None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("base") / "model")


def single_line_naming(exc: pytest.ExceptionInfo, name: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert name in message


def test_training_writes_a_diffusers_folder(trained):
    assert (trained / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (trained / "unet" / "config.json").is_file()
    scheduler = json.loads((trained / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["beta_schedule"] == "linear"
    assert scheduler["num_train_timesteps"] == 1000
    with (trained / "train_log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert all(np.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in rows)
    grid = np.asarray(Image.open(trained / "samples.png"))
    assert grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[0] >= 32 and grid.shape[1] >= 2 * 32  # two 32px previews side by side


def test_trained_model_has_church_decoder_layers(trained):
    model = load_base_model(trained)
    indices = {layer.index for layer in decoder_layers(model.unet)}
    assert {2, 4, 5, 6, 7} <= indices
    assert len(indices) >= 8


def test_load_round_trip_is_frozen_and_same_hash(trained):
    logged: list[str] = []
    config = TrainConfig(**{**TINY, "preview_samples": 0})
    out = train_base_model(synthetic_batches, trained.parent / "again", config, log=logged.append)
    assert any("step 3/3" in line for line in logged)
    model = load_base_model(out)
    assert isinstance(model, BaseModel)
    assert isinstance(model.scheduler, DDPMScheduler)
    assert model.resolution == 32 and model.in_channels == 3
    assert not model.unet.training
    assert not any(p.requires_grad for p in model.unet.parameters())
    assert model_hash(model.unet) == model_hash(out) == model_hash(str(out))
    assert model.source == str(out)
    assert model_resolution(out) == 32
    assert not (out / "samples.png").exists()


def test_training_is_deterministic_in_seed(tmp_path, trained):
    same = train_tiny(tmp_path / "same")
    other = train_tiny(tmp_path / "other", seed=1)
    assert model_hash(same) == model_hash(trained)
    assert model_hash(other) != model_hash(trained)
    a = (same / "train_log.csv").read_text()
    assert a == (trained / "train_log.csv").read_text()


def test_pointer_folder_is_followed(tmp_path, trained):
    model = load_base_model(trained)
    pointer_dir = tmp_path / "pinned"
    pointer_dir.mkdir()
    record = {"pretrained": str(trained), "hash": model_hash(model.unet), "resolution": 32}
    (pointer_dir / POINTER_FILE).write_text(json.dumps(record | {"in_channels": 3}))
    followed = load_base_model(pointer_dir)
    assert followed.source == str(trained)
    assert model_hash(followed.unet) == model_hash(pointer_dir) == record["hash"]
    assert model_resolution(pointer_dir) == 32
    (pointer_dir / POINTER_FILE).write_text(json.dumps(record | {"hash": "0" * 16}))
    with pytest.raises(DagError) as exc:
        load_base_model(pointer_dir)
    single_line_naming(exc, str(pointer_dir / POINTER_FILE))


def test_bare_unet_folder_gets_the_church_scheduler(tmp_path):
    unet = tiny_unet(64, seed=3)
    unet.save_pretrained(tmp_path / "bare", safe_serialization=True)
    assert model_resolution(tmp_path / "bare") == 64
    model = load_base_model(str(tmp_path / "bare"))
    assert model.resolution == 64
    assert model.scheduler.config.beta_schedule == "linear"
    assert model.scheduler.config.num_train_timesteps == 1000
    assert model_hash(model.unet) == model_hash(unet)
    assert model_hash(model.unet) != model_hash(tiny_unet(64, seed=4))


def test_model_resolution_reads_config_without_weights(tmp_path):
    folder = tmp_path / "pipe" / "unet"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({"_class_name": "UNet2DModel", "sample_size": 96})
    )
    assert model_resolution(tmp_path / "pipe") == 96
    with pytest.raises(DagError) as exc:  # no weights: loading fails with one line
        load_base_model(tmp_path / "pipe")
    single_line_naming(exc, str(folder))
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(DagError) as exc:
        model_resolution(tmp_path / "pipe")
    single_line_naming(exc, str(folder))


def test_sample_images_shape_dtype_determinism(trained):
    model = load_base_model(trained)
    a = sample_images(model, 3, steps=2, seed=5, batch_size=2)
    assert a.shape == (3, 32, 32, 3) and a.dtype == torch.uint8
    assert torch.equal(a, sample_images(model, 3, steps=2, seed=5, batch_size=2))
    # another batch size: the same per-sample math, only float summation order may differ
    same = sample_images(model, 3, steps=2, seed=5, batch_size=3)
    assert_same_uint8_images_up_to_summation_order(same, a, "batch_size 3 vs 2")
    assert not torch.equal(a, sample_images(model, 3, steps=2, seed=6))


def test_sample_images_ancestral_ddpm(trained):
    """DDPM draws per-sample step noise: batch-independent, seed-dependent, not DDIM's images."""
    model = load_base_model(trained)
    a = sample_images(model, 3, steps=3, seed=5, batch_size=2, sampler="ddpm")
    assert a.shape == (3, 32, 32, 3) and a.dtype == torch.uint8
    same = sample_images(model, 3, steps=3, seed=5, batch_size=3, sampler="ddpm")
    assert_same_uint8_images_up_to_summation_order(same, a, "batch_size 3 vs 2")
    assert not torch.equal(a, sample_images(model, 3, steps=3, seed=5, batch_size=2))
    with pytest.raises(DagError, match="unknown sampler 'euler'"):
        sample_images(model, 1, steps=1, sampler="euler")


def test_save_grid(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 6, 3), dtype=np.uint8)
    path = save_grid(torch.from_numpy(images), tmp_path / "sub" / "grid.png", nrow=2)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (3 * 10 + 2, 2 * 8 + 2, 3)
    assert np.array_equal(grid[2:10, 2:8], images[0])
    assert np.array_equal(grid[12:20, 10:16], images[3])
    with pytest.raises(DagError):
        save_grid(images.astype(np.float32), tmp_path / "bad.png")


@pytest.mark.parametrize("name", ["missing", "empty", "garbage", "list", "conditional"])
def test_bad_folders_are_one_line_errors(tmp_path, name):
    folder = tmp_path / name
    if name != "missing":
        folder.mkdir()
    if name == "garbage":
        (folder / "config.json").write_text("{not json")
    if name == "list":
        (folder / "config.json").write_text("[1, 2]")
    if name == "conditional":
        UNet2DConditionModel(
            sample_size=8,
            block_out_channels=(8, 8),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=8,
            norm_num_groups=8,
            layers_per_block=1,
        ).save_pretrained(folder)
    for call in (load_base_model, model_resolution, model_hash):
        with pytest.raises(DagError) as exc:
            call(str(folder))
        single_line_naming(exc, str(folder))


def test_pointer_without_target_is_an_error(tmp_path):
    (tmp_path / POINTER_FILE).write_text(json.dumps({"hash": "x"}))
    with pytest.raises(DagError) as exc:
        load_base_model(tmp_path)
    single_line_naming(exc, str(tmp_path / POINTER_FILE))


def test_hub_id_offline_is_one_line_error(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for call in (load_base_model, model_resolution):
        with pytest.raises(DagError) as exc:
            call("no-such-owner-dag/ddpm-nothing-256")
        single_line_naming(exc, "no-such-owner-dag/ddpm-nothing-256")


@pytest.mark.parametrize(
    "bad",
    [
        {"resolution": 48},
        {"channels": (8, 8, 16)},
        {"channels": (8, 8, 16, 16, 16, 12)},
        {"lr": 0},
        {"weights_dtype": "bfloat8"},
    ],
)
def test_bad_train_config(bad):
    with pytest.raises(DagError):
        TrainConfig(**{**TINY, **bad})


def test_bad_batches_are_rejected(tmp_path):
    config = TrainConfig(**TINY)
    with pytest.raises(DagError) as exc:
        train_base_model(lambda step: torch.zeros(2, 32, 32, 3), tmp_path, config, log=print)
    assert "(2, 32, 32, 3)" in str(exc.value)


def test_float16_weights_halve_the_file_and_load_as_float32(tmp_path, trained):
    half = train_tiny(tmp_path / "half", weights_dtype="float16", preview_samples=0)
    weights = "unet/diffusion_pytorch_model.safetensors"
    with safe_open(str(half / weights), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}  # noqa: SIM118
    assert (half / weights).stat().st_size < 0.6 * (trained / weights).stat().st_size
    model = load_base_model(half)
    assert {p.dtype for p in model.unet.parameters()} == {torch.float32}
    full = load_base_model(trained)
    for (name, a), (_, b) in zip(
        model.unet.state_dict().items(), full.unet.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=2e-3 * (1 + b.abs().max().item())), name


def test_warm_start_continues_from_the_given_weights(tmp_path, trained):
    """init_from copies the folder's weights before step 0: with lr ~ 0 the result is those
    weights (EMA of unchanged parameters), unlike a cold start from the same seed."""
    warm = train_tiny(tmp_path / "warm", init_from=str(trained), lr=1e-12, preview_samples=0)
    cold = train_tiny(tmp_path / "cold", lr=1e-12, preview_samples=0)
    source = load_base_model(trained).unet.state_dict()
    for name, value in load_base_model(warm).unet.state_dict().items():
        assert torch.allclose(value, source[name], atol=1e-6), name
    assert model_hash(cold) != model_hash(warm)
    recorded = json.loads((warm / "train_config.json").read_text())
    assert recorded["init_from"] == str(trained)
    assert recorded["init_from_hash"] == model_hash(trained)


def test_warm_start_needs_a_folder_with_the_same_layout(tmp_path, trained):
    with pytest.raises(DagError) as exc:
        TrainConfig(**{**TINY, "init_from": str(tmp_path / "missing")})
    single_line_naming(exc, "missing")
    with pytest.raises(DagError, match="init_from"):
        TrainConfig(**{**TINY, "init_from": 5})
    with pytest.raises(DagError) as exc:
        train_tiny(tmp_path / "other", init_from=str(trained), channels=(8, 8, 16, 16, 32, 32))
    single_line_naming(exc, "another layout")
    assert not (tmp_path / "other").exists()
    with pytest.raises(DagError) as exc:  # same weight shapes, other normalisation groups
        train_tiny(tmp_path / "groups", init_from=str(trained), norm_num_groups=4)
    single_line_naming(exc, "config norm_num_groups")


EMBEDDED = Path(__file__).resolve().parents[1] / "dag_core" / "embedded" / "world-ddpm-32"


def test_shipped_embedded_model_is_pinned_by_the_default_params():
    """The pretrained world DDPM ships in the repo (fp16, <= 8 MB) and params.yaml pins it."""
    import yaml

    weights = EMBEDDED / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size <= 8_000_000
    for name in ("train_config.json", "samples.png", "README.md"):  # the card and what it cites
        assert (EMBEDDED / name).is_file(), name
    params = yaml.safe_load((EMBEDDED.parents[2] / "params.yaml").read_text())
    assert Path(params["base_model"]["pretrained"]) == EMBEDDED.relative_to(EMBEDDED.parents[2])
    model = load_base_model(EMBEDDED)
    assert model.resolution == 32 and {2, 4, 5, 6, 7} <= {
        layer.index for layer in decoder_layers(model.unet)
    }
    recorded = json.loads((EMBEDDED / "train_config.json").read_text())
    assert recorded["weights_dtype"] == "float16" and recorded["steps"] >= 1000
