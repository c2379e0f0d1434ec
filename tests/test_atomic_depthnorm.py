"""Atomic outputs (whole files and whole directories) and the shared depth normalisation."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from dag_core.atomic import (
    atomic_open,
    atomic_path,
    replace_dir,
    save_figure,
    write_bytes_atomic,
    write_text_atomic,
)
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


def test_write_text_atomic_replaces_whole_files_only(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "metrics" / "m.json"
    write_text_atomic(path, "{}\n")  # the folder is created
    assert path.read_text() == "{}\n"
    write_text_atomic(path, "δ ↑\n")
    assert path.read_bytes() == "δ ↑\n".encode()
    assert write_bytes_atomic(path, b"\x00\x01") == path and path.read_bytes() == b"\x00\x01"

    def crash(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk on fire"):
        write_text_atomic(path, "new")
    monkeypatch.undo()
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json"]  # no temp file left


def test_atomic_open_and_atomic_path_keep_the_old_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    with atomic_open(path, newline="") as fh:
        csv.writer(fh).writerows([["w", "dfid"], [0, 1.5]])
        assert not path.exists()  # invisible until the block succeeds
    assert path.read_bytes() == b"w,dfid\r\n0,1.5\r\n"
    with pytest.raises(RuntimeError), atomic_open(path) as fh:
        fh.write("half")
        raise RuntimeError("crash mid-write")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"w,dfid\r\n0,1.5\r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv"]
    with pytest.raises(ValueError, match="whole files"):
        atomic_open(path, "a").__enter__()


def test_save_figure_matches_savefig(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "direct.png", dpi=50)
    assert save_figure(fig, tmp_path / "atomic.png", dpi=50) == tmp_path / "atomic.png"
    plt.close(fig)
    assert (tmp_path / "atomic.png").read_bytes() == (tmp_path / "direct.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic.png", "direct.png"]


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
