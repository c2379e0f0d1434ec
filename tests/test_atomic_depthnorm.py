"""Atomic outputs (whole files and whole directories) and the shared depth normalisation."""

from __future__ import annotations

import csv
import errno
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from dag_core.atomic import (
    atomic_open,
    atomic_path,
    final_path,
    replace_dir,
    save_figure,
    write_bytes_atomic,
    write_error,
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


def test_write_error_names_the_final_path(tmp_path: Path) -> None:
    """A library's own write error (safetensors: no errno attribute, no file) and an OSError
    naming a temporary file both become ``OSError(errno, strerror, final path)``."""
    final = tmp_path / "models/heads/heads.safetensors"
    tmp = tmp_path / "models/.heads.tmp-123-0123abcd/.heads.safetensors.tmp-123"
    assert final_path(tmp) == final
    assert final_path(tmp_path / ".x.tmp-y/a") == tmp_path / ".x.tmp-y/a"  # not a temp name
    rust = RuntimeError("Error while serializing: I/O error: File too large (os error 27)")
    for exc, code in ((rust, errno.EFBIG), (RuntimeError("Os { code: 28, kind: Full }"), 28)):
        named = write_error(exc, tmp)
        assert named is not None and named.filename == str(final)
        assert (named.errno, named.strerror) == (code, os.strerror(code))
    denied = write_error(PermissionError(errno.EACCES, "Permission denied", str(tmp)), final)
    assert isinstance(denied, PermissionError) and denied.filename == str(final)
    renamed = write_error(OSError(errno.EXDEV, "Invalid link", str(tmp), str(final)), final)
    assert renamed is not None and (renamed.filename, renamed.filename2) == (str(final), None)
    full = write_error(OSError(errno.ENOSPC, "No space left on device"), tmp)
    assert full is not None and full.filename == str(final)
    named = OSError(errno.ENOENT, "No such file or directory", "/elsewhere")
    assert write_error(named, final) is named
    assert write_error(ValueError("a bad value"), final) is None
    assert write_error(RuntimeError("unexpected pos 576 vs 534"), final) is None


@contextmanager
def _file_size_limit(size: int) -> Iterator[None]:
    """RLIMIT_FSIZE for this process (Python ignores SIGXFSZ: writes fail with EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_library_write_errors_name_the_final_file(tmp_path: Path) -> None:
    """Under a real file-size limit: safetensors through ``save_pretrained`` inside
    ``replace_dir`` (a SafetensorError naming no file), ``save_file`` inside ``atomic_path``
    and a plain Python write inside ``replace_dir`` each end as ``[Errno 27]`` naming the file
    the user asked for; the earlier output stays and no temporary file or folder is left."""
    from diffusers import UNet2DModel
    from safetensors.torch import save_file

    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    target = tmp_path / "prior"
    target.mkdir()
    (target / "earlier.txt").write_text("earlier")
    with _file_size_limit(4096):
        with pytest.raises(OSError) as info, replace_dir(target) as tmp:
            unet.save_pretrained(tmp / "unet", safe_serialization=True)
        assert (info.value.errno, info.value.filename) == (
            errno.EFBIG,
            str(target / "unet/diffusion_pytorch_model.safetensors"),
        )
        with pytest.raises(OSError) as info, atomic_path(tmp_path / "w.safetensors") as part:
            save_file({"w": torch.zeros(4096)}, part)
        assert (info.value.errno, info.value.filename) == (
            errno.EFBIG,
            str(tmp_path / "w.safetensors"),
        )
        with pytest.raises(OSError) as info, replace_dir(target) as tmp:
            (tmp / "log.csv").write_bytes(b"x" * 8192)
        assert info.value.filename == str(target / "log.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prior"]
    assert sorted(p.name for p in target.iterdir()) == ["earlier.txt"]


def test_weights_serialised_to_bytes_match_save_file(tmp_path: Path) -> None:
    """The heads and depth nets write ``safetensors.torch.save(state)`` (errors as OSError
    naming the file): the same bytes ``save_file`` writes."""
    from safetensors.torch import save_file

    from dag_core.downstream import DepthNet, DownstreamConfig, save_depth_net

    config = DownstreamConfig(resolution=16, channels=(8, 16))
    torch.manual_seed(0)
    net = DepthNet(config.channels)
    save_depth_net(net, config, DepthNorm(), tmp_path / "net")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, tmp_path / "direct.safetensors")
    written = (tmp_path / "net/depth_net.safetensors").read_bytes()
    assert written == (tmp_path / "direct.safetensors").read_bytes()


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
