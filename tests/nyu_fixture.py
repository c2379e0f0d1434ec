"""Write a tiny NYU-Depth v2 labelled file in the official layout, for reader tests.

The official ``nyu_depth_v2_labeled.mat`` is a MATLAB v7.3 file (HDF5 behind a 512-byte MATLAB
header) holding ``images`` (480×640×3×N uint8) and ``depths`` (480×640×N single, metres). MATLAB
is column-major, so h5py sees the axes reversed: ``images`` (N, 3, 640, 480) and ``depths``
(N, 640, 480) — (1449, 3, 640, 480) and (1449, 640, 480) in the real file. ``splits.mat`` is a
MATLAB v5 file with 1-based column vectors ``testNdxs`` and ``trainNdxs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from dag_core.nyu import DepthPair

MATLAB_HEADER = (
    b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 2015 "
    b"HDF5 schema 1.00 ."
)


def _userblock() -> bytes:
    """The 512-byte MATLAB v7.3 userblock: text header, version 0x0200, endian mark 'IM'."""
    return MATLAB_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM" + b"\x00" * 384


def write_nyu_mat(
    pairs: Sequence[DepthPair],
    mat_path: str | Path,
    splits_path: str | Path,
    test_indices: Sequence[int],
) -> tuple[Path, Path]:
    """Write ``pairs`` as an official-layout labelled ``.mat`` plus its ``splits.mat``.

    ``test_indices`` are 0-based positions in ``pairs`` for ``testNdxs``; every other frame goes
    to ``trainNdxs``. Both are stored 1-based as double column vectors, as MATLAB writes them.
    Returns ``(mat_path, splits_path)``.
    """
    mat_path, splits_path = Path(mat_path), Path(splits_path)
    images = np.stack([np.asarray(p.rgb, dtype=np.uint8).transpose(2, 1, 0) for p in pairs])
    depths = np.stack([np.asarray(p.depth, dtype=np.float32).T for p in pairs])
    with h5py.File(mat_path, "w", userblock_size=512) as f:
        f.create_dataset("images", data=images).attrs["MATLAB_class"] = np.bytes_("uint8")
        f.create_dataset("depths", data=depths).attrs["MATLAB_class"] = np.bytes_("single")
    with mat_path.open("r+b") as fh:
        fh.write(_userblock())
    test = sorted(set(test_indices))
    train = [i for i in range(len(pairs)) if i not in test]
    scipy.io.savemat(
        str(splits_path),
        {
            "testNdxs": (np.asarray(test, dtype=np.float64) + 1).reshape(-1, 1),
            "trainNdxs": (np.asarray(train, dtype=np.float64) + 1).reshape(-1, 1),
        },
    )
    return mat_path, splits_path
