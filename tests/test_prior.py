"""The depth prior ε_φ: config validation, a few training steps, and the save/load round trip."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.prior import PriorConfig, load_prior, prior_unet, train_prior

TINY = {"resolution": 16, "channels": (8, 16), "steps": 3, "batch_size": 2}


def _batches(resolution: int = 16):
    def batch(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(step)
        return torch.rand(2, 1, resolution, resolution, generator=g) * 2 - 1

    return batch


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prior") / "prior"
    norm = DepthNorm(kind="linear", min_depth=0.5, max_depth=8.0)
    return train_prior(_batches(), out, PriorConfig(**TINY), norm, log=lambda _: None)


def test_prior_unet_is_one_channel() -> None:
    unet = prior_unet(PriorConfig(**TINY))
    out = unet(torch.zeros(2, 1, 16, 16), torch.tensor([3, 700])).sample
    assert out.shape == (2, 1, 16, 16)


def test_prior_unet_deterministic_in_seed() -> None:
    a, b = prior_unet(PriorConfig(**TINY)), prior_unet(PriorConfig(**TINY))
    c = prior_unet(PriorConfig(**TINY, seed=1))
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([10])
    assert torch.equal(a(x, t).sample, b(x, t).sample)
    assert not torch.equal(a(x, t).sample, c(x, t).sample)


def test_checkpoint_layout(trained: Path) -> None:
    assert (trained / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (trained / "scheduler" / "scheduler_config.json").is_file()
    meta = json.loads((trained / "prior.json").read_text())
    assert meta["resolution"] == 16
    assert meta["norm"] == {"kind": "linear", "min_depth": 0.5, "max_depth": 8.0}
    assert meta["config"]["channels"] == [8, 16]
    with open(trained / "train_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert all(float(r["loss"]) > 0 for r in rows)


def test_load_round_trip(trained: Path) -> None:
    prior = load_prior(trained)
    assert prior.resolution == 16
    assert prior.num_train_timesteps == 1000
    assert prior.norm == DepthNorm(kind="linear", min_depth=0.5, max_depth=8.0)
    assert not prior.unet.training
    assert not any(p.requires_grad for p in prior.unet.parameters())
    # the trained weights differ from the initial ones, and loading twice gives the same model
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([123])
    again = load_prior(trained)
    with torch.no_grad():
        out = prior.unet(x, t).sample
        assert torch.equal(out, again.unet(x, t).sample)
        assert not torch.equal(out, prior_unet(PriorConfig(**TINY))(x, t).sample)


def test_training_is_reproducible(trained: Path, tmp_path: Path) -> None:
    norm = DepthNorm(kind="linear", min_depth=0.5, max_depth=8.0)
    again = train_prior(_batches(), tmp_path / "p", PriorConfig(**TINY), norm, log=lambda _: None)
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([5])
    with torch.no_grad():
        assert torch.equal(
            load_prior(trained).unet(x, t).sample, load_prior(again).unet(x, t).sample
        )


def test_load_missing_and_corrupt(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(DagError, match="missing"):
        load_prior(tmp_path / "nothing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "prior.json").write_text("{not json")
    with pytest.raises(DagError, match="corrupt"):
        load_prior(bad)
    (bad / "prior.json").write_text((trained / "prior.json").read_text())
    with pytest.raises(DagError, match="corrupt"):
        load_prior(bad)  # no unet/ or scheduler/


@pytest.mark.parametrize(
    "kwargs",
    [
        {"resolution": 18, "channels": (8, 16, 16)},
        {"channels": ()},
        {"channels": (8, -1)},
        {"steps": 0},
        {"batch_size": -2},
        {"lr": float("nan")},
        {"lr": 0.0},
    ],
)
def test_bad_config(kwargs: dict) -> None:
    with pytest.raises(DagError):
        PriorConfig(**kwargs)


@pytest.mark.parametrize(
    "batch",
    [torch.zeros(2, 1, 8, 8), torch.zeros(2, 3, 16, 16), torch.full((2, 1, 16, 16), float("nan"))],
)
def test_bad_batch_is_rejected_and_nothing_written(batch: torch.Tensor, tmp_path: Path) -> None:
    with pytest.raises(DagError, match="step 0"):
        train_prior(lambda _: batch, tmp_path / "p", PriorConfig(**TINY), DepthNorm(), log=print)
    assert not (tmp_path / "p").exists()


def _files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def test_stopped_training_resumes_from_its_snapshot_to_the_same_bytes(tmp_path: Path) -> None:
    """Stopped at step 4 of 6 (snapshots after every step), the rerun continues after the last
    snapshot and writes exactly the files of an uninterrupted run; another run's snapshot (other
    key) is ignored."""
    from dag_core.resumable import TrainState

    norm = DepthNorm(kind="linear", min_depth=0.5, max_depth=8.0)
    cfg = PriorConfig(**{**TINY, "steps": 6})
    clean = train_prior(_batches(), tmp_path / "clean", cfg, norm, log=lambda _: None)

    def stopping(step: int) -> torch.Tensor:
        if step == 4:
            raise KeyboardInterrupt
        return _batches()(step)

    state = TrainState(tmp_path / "state.pt", key="run-a", every_s=0)
    with pytest.raises(KeyboardInterrupt):
        train_prior(stopping, tmp_path / "p", cfg, norm, log=lambda _: None, snapshot=state)
    assert state.saved_step == 4 and not (tmp_path / "p").exists()
    assert TrainState(tmp_path / "state.pt", key="run-b").load() is None  # not this run's
    logs: list[str] = []
    resumed = TrainState(tmp_path / "state.pt", key="run-a", every_s=0)
    train_prior(_batches(), tmp_path / "p", cfg, norm, log=logs.append, snapshot=resumed)
    assert any("steps 1-4 from the saved state" in line for line in logs), logs
    assert _files(tmp_path / "p") == _files(clean)
