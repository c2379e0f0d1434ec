"""NYU-Depth v2 readers: the official labelled ``.mat`` file and the DenseDepth ``nyu2_test``.

The DAG paper (Kim et al., arXiv 2212.08861, Sec. 4) trains its depth predictors on a small
labelled subset and reports depth quality on NYU-Depth v2; these readers give both layouts one
shape, a sequence of :class:`DepthPair` (uint8 RGB, float32 depth in metres, 0 = invalid):

* the official ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3, i.e. HDF5; 1449 frames) with the official
  ``splits.mat`` (``testNdxs`` 654×1, ``trainNdxs`` 795×1, 1-based), read lazily one frame at a time
  (:class:`NyuMat`);
* the DenseDepth layout — a CSV of ``colors,depth`` PNG names per line, RGB PNGs and 16-bit depth
  PNGs in millimetres (:func:`read_densedepth`).

:func:`open_nyu` picks the reader from the path.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import h5py
import numpy as np
import scipy.io
from PIL import Image

from dag_core.errors import DagError

SPLITS = ("test", "train", "all")
SPLIT_KEYS = {"test": "testNdxs", "train": "trainNdxs"}
SPLITS_FILE_NAME = "splits.mat"


@dataclass
class DepthPair:
    """One RGB image and its metric depth map at the same resolution."""

    id: str
    rgb: np.ndarray  # uint8 (H, W, 3)
    depth: np.ndarray  # float32 metres (H, W); 0 = invalid


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DagError(f"unknown NYU split '{split}'; expected one of {', '.join(SPLITS)}")


# ---------------------------------------------------------------------------------------------
# DenseDepth layout
# ---------------------------------------------------------------------------------------------


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except OSError as exc:
        raise DagError(f"cannot read RGB image {path}: {exc}") from exc


def _read_depth_png(path: Path) -> np.ndarray:
    """A 16-bit depth PNG in millimetres → float32 metres (0 stays 0 = invalid)."""
    try:
        with Image.open(path) as img:
            if not img.mode.startswith("I"):
                raise DagError(f"depth PNG {path} is not 16-bit (millimetres); got mode {img.mode}")
            raw = np.asarray(img)
    except OSError as exc:
        raise DagError(f"cannot read depth PNG {path}: {exc}") from exc
    return raw.astype(np.float32) / np.float32(1000.0)


def _resolve_png(name: str, csv_path: Path) -> Path:
    """Find a CSV entry: relative to the CSV's folder, then its parent, then by basename."""
    rel = Path(name.strip().replace("\\", "/"))
    folder = csv_path.parent
    for candidate in (folder / rel, folder.parent / rel, folder / rel.name):
        if candidate.is_file():
            return candidate
    raise DagError(f"{csv_path} names {name.strip()}, which is not in {folder}")


def _find_csv(root: Path, csv_name: str | None, split: str) -> Path:
    if csv_name is not None:
        path = root / csv_name
        if not path.is_file():
            raise DagError(f"CSV not found: {path}")
        return path
    preferred = root / f"nyu2_{split}.csv"
    if preferred.is_file():
        return preferred
    found = sorted(root.glob("*.csv"))
    if split == "test" and len(found) == 1:
        return found[0]
    raise DagError(f"no nyu2_{split}.csv in {root} (found {len(found)} CSV file(s))")


def _pair_id(colors: Path) -> str:
    stem = colors.stem
    return stem.removesuffix("_colors")


class DenseDepthFolder(Sequence[DepthPair]):
    """Lazy reader of the DenseDepth layout: every PNG is located on open, decoded on access."""

    def __init__(self, root: str | Path, *, csv_name: str | None = None, split: str = "test"):
        _check_split(split)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DagError(f"NYU folder not found: {self.root}")
        self.csv_path = _find_csv(self.root, csv_name, split)
        self._items: list[tuple[str, Path, Path]] = []
        with self.csv_path.open(newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh), start=1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 2:
                    raise DagError(
                        f"{self.csv_path} line {lineno}: expected 'colors,depth', got {row!r}"
                    )
                colors = _resolve_png(row[0], self.csv_path)
                depth = _resolve_png(row[1], self.csv_path)
                self._items.append((_pair_id(colors), colors, depth))
        if not self._items:
            raise DagError(f"{self.csv_path} lists no image pairs")

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> DepthPair: ...
    @overload
    def __getitem__(self, i: slice) -> list[DepthPair]: ...
    def __getitem__(self, i: int | slice) -> DepthPair | list[DepthPair]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        pair_id, colors, depth_path = self._items[i]
        rgb, depth = _read_rgb(colors), _read_depth_png(depth_path)
        if rgb.shape[:2] != depth.shape:
            raise DagError(
                f"{depth_path} is {depth.shape[1]}x{depth.shape[0]} but {colors} is "
                f"{rgb.shape[1]}x{rgb.shape[0]}"
            )
        return DepthPair(id=pair_id, rgb=rgb, depth=depth)


def read_densedepth(root: str | Path, *, csv_name: str | None = None) -> DenseDepthFolder:
    """Open a DenseDepth ``nyu2_test`` folder (lazy sequence of :class:`DepthPair`).

    The CSV is ``csv_name`` (relative to ``root``), else ``nyu2_test.csv``, else the folder's only
    CSV. Each line is ``colors.png,depth.png``; names may carry DenseDepth's ``data/nyu2_test/``
    prefix and are resolved relative to the CSV's folder, its parent (the DenseDepth zip root), or
    by basename next to the CSV. Depth PNGs must be 16-bit millimetres.
    """
    return DenseDepthFolder(root, csv_name=csv_name)


def iter_densedepth(root: str | Path, *, csv_name: str | None = None) -> Iterator[DepthPair]:
    """Yield the pairs of a DenseDepth folder one at a time (see :func:`read_densedepth`)."""
    yield from read_densedepth(root, csv_name=csv_name)


# ---------------------------------------------------------------------------------------------
# Official labelled .mat
# ---------------------------------------------------------------------------------------------


def _read_split_indices(splits_path: Path, split: str, n_frames: int) -> np.ndarray:
    """0-based frame indices of ``split`` from the official ``splits.mat`` (1-based MATLAB)."""
    if not splits_path.is_file():
        raise DagError(f"splits file not found: {splits_path}")
    try:
        mat = scipy.io.loadmat(str(splits_path))
    except (ValueError, OSError, NotImplementedError, TypeError) as exc:
        raise DagError(f"cannot read splits file {splits_path}: {exc}") from exc
    key = SPLIT_KEYS[split]
    if key not in mat:
        raise DagError(f"{splits_path} has no '{key}' variable")
    raw = np.asarray(mat[key]).ravel()
    if raw.size == 0 or not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
        raise DagError(f"{splits_path}: '{key}' is not a list of integer frame indices")
    ndx = raw.astype(np.int64)
    bad = ndx[(ndx < 1) | (ndx > n_frames)]
    if bad.size:
        raise DagError(
            f"{splits_path}: '{key}' index {int(bad[0])} out of range 1..{n_frames} (.mat)"
        )
    return ndx - 1


class NyuMat(Sequence[DepthPair]):
    """Lazy reader of ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5), one frame per access.

    MATLAB stores ``images`` as 480×640×3×N and ``depths`` as 480×640×N (metres); HDF5 sees the
    axes reversed, (N, 3, 640, 480) and (N, 640, 480), so each frame is transposed back to
    (480, 640, 3) / (480, 640). ``split`` selects the official ``splits.mat`` indices (``test``:
    654 frames, ``train``: 795) or every frame (``all``). Pair ids are the 1-based MATLAB frame
    numbers, zero-padded to 4 digits, so they are unique across splits.

    The HDF5 handle is opened on first access in each process (safe for DataLoader workers).
    """

    def __init__(
        self, mat_path: str | Path, splits_path: str | Path | None = None, split: str = "test"
    ) -> None:
        _check_split(split)
        self.mat_path = Path(mat_path)
        self.split = split
        if not self.mat_path.is_file():
            raise DagError(f"NYU .mat file not found: {self.mat_path}")
        if not h5py.is_hdf5(self.mat_path):
            raise DagError(f"{self.mat_path} is not a MATLAB v7.3 (HDF5) file")
        self._file: h5py.File | None = None
        self._pid: int | None = None
        try:
            n_frames = self._datasets()[0].shape[0]
            if split == "all":
                self.splits_path: Path | None = None
                self.indices = np.arange(n_frames, dtype=np.int64)
            else:
                self.splits_path = (
                    Path(splits_path) if splits_path else self.mat_path.with_name(SPLITS_FILE_NAME)
                )
                self.indices = _read_split_indices(self.splits_path, split, n_frames)
        except DagError:
            self.close()  # do not leave the HDF5 file open behind a failed open
            raise

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.mat_path, "r")
            except OSError as exc:
                raise DagError(f"cannot open {self.mat_path}: {exc}") from exc
            self._pid = os.getpid()
        return self._file

    def _datasets(self) -> tuple[h5py.Dataset, h5py.Dataset]:
        f = self._handle()
        found = []
        for name in ("images", "depths"):
            obj = f.get(name)
            if not isinstance(obj, h5py.Dataset):
                raise DagError(f"{self.mat_path} has no '{name}' dataset")
            found.append(obj)
        images, depths = found
        if images.ndim != 4 or images.shape[1] != 3:
            raise DagError(f"{self.mat_path}: 'images' has shape {images.shape}, want (N, 3, W, H)")
        if depths.ndim != 3 or depths.shape != (images.shape[0], *images.shape[2:]):
            raise DagError(
                f"{self.mat_path}: 'depths' shape {depths.shape} does not match 'images' "
                f"{images.shape}"
            )
        return images, depths

    def close(self) -> None:
        """Close the HDF5 handle (reopened on the next access)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> NyuMat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state

    def __len__(self) -> int:
        return int(self.indices.size)

    @overload
    def __getitem__(self, i: int) -> DepthPair: ...
    @overload
    def __getitem__(self, i: slice) -> list[DepthPair]: ...
    def __getitem__(self, i: int | slice) -> DepthPair | list[DepthPair]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        frame = int(self.indices[i])
        images, depths = self._datasets()
        rgb = np.ascontiguousarray(np.asarray(images[frame], dtype=np.uint8).transpose(2, 1, 0))
        depth = np.ascontiguousarray(np.asarray(depths[frame], dtype=np.float32).T)
        return DepthPair(id=f"{frame + 1:04d}", rgb=rgb, depth=depth)


def open_nyu(
    path: str | Path, *, split: str = "test", splits_path: str | Path | None = None
) -> Sequence[DepthPair]:
    """Open NYU-Depth v2 from a ``.mat`` file (:class:`NyuMat`) or a DenseDepth folder.

    For a ``.mat`` file, ``splits.mat`` is looked up next to it unless ``splits_path`` is given.
    For a folder, the CSV is ``nyu2_{split}.csv``, or for ``split="test"`` the folder's only CSV.
    """
    _check_split(split)
    p = Path(path)
    if not p.exists():
        raise DagError(f"NYU path not found: {p}")
    if p.is_dir():
        return DenseDepthFolder(p, split=split)
    if p.suffix.lower() == ".mat":
        return NyuMat(p, splits_path=splits_path, split=split)
    raise DagError(f"{p} is neither a .mat file nor a DenseDepth folder with a CSV")
