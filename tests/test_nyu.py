"""NYU-Depth v2 readers on real data: 50 DenseDepth test pairs and a tiny official-layout .mat."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from dag_core.errors import DagError
from dag_core.nyu import DenseDepthFolder, DepthPair, NyuMat, open_nyu, read_densedepth
from tests.nyu_fixture import write_nyu_mat

N_FIXTURE = 4
TEST_POSITIONS = (0, 2)  # 0-based positions of the fixture frames in testNdxs


@pytest.fixture(scope="module")
def real_pairs(nyu_test50_dir: Path) -> list[DepthPair]:
    return list(read_densedepth(nyu_test50_dir))


@pytest.fixture(scope="module")
def nyu_mat(tmp_path_factory: pytest.TempPathFactory, real_pairs: list[DepthPair]) -> Path:
    """``nyu_depth_v2_labeled.mat`` + ``splits.mat`` built from the first real pairs."""
    folder = tmp_path_factory.mktemp("nyu_mat")
    mat, _ = write_nyu_mat(
        real_pairs[:N_FIXTURE],
        folder / "nyu_depth_v2_labeled.mat",
        folder / "splits.mat",
        TEST_POSITIONS,
    )
    return mat


def _assert_one_line(exc: pytest.ExceptionInfo[DagError], *needles: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def _assert_same_pair(got: DepthPair, want: DepthPair) -> None:
    assert got.rgb.dtype == np.uint8 and got.rgb.shape == want.rgb.shape
    np.testing.assert_array_equal(got.rgb, want.rgb)
    assert got.depth.dtype == np.float32 and got.depth.shape == want.depth.shape
    np.testing.assert_allclose(got.depth, want.depth, rtol=0, atol=1e-6)


# --- DenseDepth layout, the real 50 pairs ---------------------------------------------------


def test_densedepth_reads_all_50_real_pairs(nyu_test50_dir: Path, real_pairs: list[DepthPair]):
    with (nyu_test50_dir / "nyu2_test.csv").open(newline="") as fh:
        rows = [row for row in csv.reader(fh) if row]
    assert len(real_pairs) == len(rows) == 50
    assert [p.id for p in real_pairs] == [Path(c).name.removesuffix("_colors.png") for c, _ in rows]
    assert len({p.id for p in real_pairs}) == 50
    for pair in real_pairs:
        assert pair.rgb.dtype == np.uint8 and pair.rgb.shape == (480, 640, 3)
        assert pair.depth.dtype == np.float32 and pair.depth.shape == (480, 640)
        valid = pair.depth[pair.depth > 0]
        assert valid.size > 0.5 * pair.depth.size
        # metres, not millimetres: NYU's Kinect range
        assert valid.min() >= 0.5 and valid.max() <= 10.0
        assert pair.rgb.std() > 5  # a real photograph, not a blank frame


def test_densedepth_values_match_the_pngs(nyu_test50_dir: Path, real_pairs: list[DepthPair]):
    pair = real_pairs[7]
    with Image.open(nyu_test50_dir / f"{pair.id}_depth.png") as img:
        millimetres = np.array(img).astype(np.int64)
    with Image.open(nyu_test50_dir / f"{pair.id}_colors.png") as img:
        rgb = np.array(img.convert("RGB"))
    np.testing.assert_allclose(pair.depth, millimetres / 1000.0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(pair.rgb, rgb)


def test_densedepth_is_lazy_sequence(nyu_test50_dir: Path, real_pairs: list[DepthPair]):
    folder = read_densedepth(nyu_test50_dir)
    assert isinstance(folder, DenseDepthFolder)
    assert [p.id for p in folder[-2:]] == [p.id for p in real_pairs[-2:]]
    _assert_same_pair(folder[-1], real_pairs[-1])


# --- official .mat layout -------------------------------------------------------------------


def test_mat_fixture_has_official_hdf5_layout(nyu_mat: Path):
    assert nyu_mat.read_bytes()[:10] == b"MATLAB 7.3"
    with h5py.File(nyu_mat, "r") as f:
        assert f["images"].shape == (N_FIXTURE, 3, 640, 480) and f["images"].dtype == np.uint8
        assert f["depths"].shape == (N_FIXTURE, 640, 480) and f["depths"].dtype == np.float32


def test_mat_round_trip_equals_png_pairs(nyu_mat: Path, real_pairs: list[DepthPair]):
    with NyuMat(nyu_mat, split="all") as frames:
        assert len(frames) == N_FIXTURE
        got = frames[:]
    assert [p.id for p in got] == [f"{i:04d}" for i in range(1, N_FIXTURE + 1)]
    for frame, pair in zip(got, real_pairs[:N_FIXTURE], strict=True):
        _assert_same_pair(frame, pair)


def test_mat_split_selection(nyu_mat: Path, real_pairs: list[DepthPair]):
    test = NyuMat(nyu_mat, split="test")
    train = NyuMat(nyu_mat, nyu_mat.with_name("splits.mat"), split="train")
    train_positions = [i for i in range(N_FIXTURE) if i not in TEST_POSITIONS]
    assert len(test) == len(TEST_POSITIONS) and len(train) == len(train_positions)
    assert [p.id for p in test] == [f"{i + 1:04d}" for i in TEST_POSITIONS]
    assert [p.id for p in train] == [f"{i + 1:04d}" for i in train_positions]
    for frame, i in zip(test, TEST_POSITIONS, strict=True):
        _assert_same_pair(frame, real_pairs[i])
    for frame, i in zip(train, train_positions, strict=True):
        _assert_same_pair(frame, real_pairs[i])


def test_open_nyu_dispatches_on_path(nyu_mat: Path, nyu_test50_dir: Path, tmp_path: Path):
    mat = open_nyu(nyu_mat)
    assert isinstance(mat, NyuMat) and mat.split == "test" and len(mat) == len(TEST_POSITIONS)
    assert len(open_nyu(nyu_mat, split="all")) == N_FIXTURE
    folder = open_nyu(nyu_test50_dir)
    assert isinstance(folder, DenseDepthFolder) and len(folder) == 50
    # an explicit splits file elsewhere overrides the one next to the .mat
    other = tmp_path / "other_splits.mat"
    scipy.io.savemat(str(other), {"testNdxs": np.array([[4.0]]), "trainNdxs": np.array([[1.0]])})
    assert [p.id for p in open_nyu(nyu_mat, splits_path=other)] == ["0004"]


# --- bad inputs: one-line DagError naming the culprit ---------------------------------------


def test_missing_path(tmp_path: Path):
    missing = tmp_path / "nope"
    with pytest.raises(DagError) as exc:
        open_nyu(missing)
    _assert_one_line(exc, str(missing))
    with pytest.raises(DagError) as exc:
        read_densedepth(missing)
    _assert_one_line(exc, str(missing))
    with pytest.raises(DagError) as exc:
        NyuMat(tmp_path / "nope.mat", split="all")
    _assert_one_line(exc, "nope.mat")


def test_garbage_mat(tmp_path: Path):
    garbage = tmp_path / "nyu_depth_v2_labeled.mat"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DagError) as exc:
        open_nyu(garbage, split="all")
    _assert_one_line(exc, str(garbage), "HDF5")


def test_pre_v73_mat_is_rejected(tmp_path: Path, real_pairs: list[DepthPair]):
    """A MATLAB v5 file (not HDF5) with the right variable names is still not the labelled set."""
    v5 = tmp_path / "labeled_v5.mat"
    scipy.io.savemat(str(v5), {"depths": real_pairs[0].depth[:8, :8]})
    with pytest.raises(DagError) as exc:
        open_nyu(v5, split="all")
    _assert_one_line(exc, str(v5), "v7.3")


def test_hdf5_without_nyu_datasets(tmp_path: Path):
    other = tmp_path / "other.mat"
    with h5py.File(other, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 3, 8, 6), dtype=np.uint8))
    with pytest.raises(DagError) as exc:
        NyuMat(other, split="all")
    _assert_one_line(exc, str(other), "depths")
    with h5py.File(other, "a") as f:
        f.create_dataset("depths", data=np.zeros((2, 6, 8), dtype=np.float32))
    with pytest.raises(DagError) as exc:
        NyuMat(other, split="all")
    _assert_one_line(exc, str(other), "does not match")


def test_missing_splits_file(tmp_path: Path, real_pairs: list[DepthPair]):
    mat, splits = write_nyu_mat(real_pairs[:2], tmp_path / "l.mat", tmp_path / "splits.mat", [0])
    splits.unlink()
    with pytest.raises(DagError) as exc:
        open_nyu(mat)
    _assert_one_line(exc, str(splits))
    assert len(open_nyu(mat, split="all")) == 2  # "all" needs no splits file


def test_splits_index_out_of_range(tmp_path: Path, real_pairs: list[DepthPair]):
    mat, splits = write_nyu_mat(real_pairs[:2], tmp_path / "l.mat", tmp_path / "splits.mat", [0])
    scipy.io.savemat(str(splits), {"testNdxs": np.array([[3.0]]), "trainNdxs": np.array([[1.0]])})
    with pytest.raises(DagError) as exc:
        NyuMat(mat, split="test")
    _assert_one_line(exc, str(splits), "3")


@pytest.mark.parametrize("split", ["val", "TEST", ""])
def test_bad_split_name(split: str, nyu_mat: Path, nyu_test50_dir: Path):
    for path in (nyu_mat, nyu_test50_dir):
        with pytest.raises(DagError) as exc:
            open_nyu(path, split=split)
        _assert_one_line(exc, f"'{split}'", "test")


def test_densedepth_bad_entries(tmp_path: Path, real_pairs: list[DepthPair]):
    Image.fromarray(real_pairs[0].rgb).save(tmp_path / "a_colors.png")
    (tmp_path / "nyu2_test.csv").write_text("a_colors.png,a_depth.png\n")
    with pytest.raises(DagError) as exc:
        read_densedepth(tmp_path)
    _assert_one_line(exc, "a_depth.png")
    # an 8-bit depth PNG is not millimetres
    Image.fromarray((real_pairs[0].depth * 25).astype(np.uint8)).save(tmp_path / "a_depth.png")
    folder = read_densedepth(tmp_path)
    with pytest.raises(DagError) as exc:
        folder[0]
    _assert_one_line(exc, "a_depth.png", "16-bit")
