"""Whole-directory atomic replacement and the shared depth normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dag_core.atomic import replace_dir
from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError


def test_replace_dir_swaps_in_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with replace_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # the old output stays readable while building
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_dir_keeps_previous_output_when_the_run_fails(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), replace_dir(target) as tmp:
        (tmp / "half.txt").write_text("partial")
        raise RuntimeError("crash mid-stage")
    assert (target / "old.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("kind", ["log", "linear"])
def test_depthnorm_round_trip_and_range(kind: str) -> None:
    norm = DepthNorm(kind=kind, min_depth=0.5, max_depth=10.0)
    depth = torch.tensor([0.5, 1.0, 3.0, 10.0])
    x = norm.normalize(depth)
    assert x[0].item() == pytest.approx(-1.0) and x[-1].item() == pytest.approx(1.0)
    assert torch.all(x[1:] > x[:-1])
    torch.testing.assert_close(norm.denormalize(x), depth)
    assert norm.normalize(torch.tensor([20.0])).item() == pytest.approx(1.0)  # clamped


def test_depthnorm_log_midpoint_is_geometric_mean() -> None:
    norm = DepthNorm(kind="log", min_depth=1.0, max_depth=4.0)
    assert norm.normalize(torch.tensor([2.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_depthnorm_serialises_and_rejects_bad_values() -> None:
    norm = DepthNorm(kind="linear", min_depth=0.1, max_depth=8.0)
    assert DepthNorm.from_dict(norm.to_dict()) == norm
    with pytest.raises(DagError, match="cubic"):
        DepthNorm(kind="cubic")
    with pytest.raises(DagError, match="0 < min_depth < max_depth"):
        DepthNorm(min_depth=5.0, max_depth=1.0)
    with pytest.raises(DagError, match="scale"):
        DepthNorm.from_dict({"kind": "log", "scale": 2})
    valid = DepthNorm.valid(torch.tensor([0.0, 1.0, float("nan"), 2.0]))
    assert valid.tolist() == [False, True, False, True]
