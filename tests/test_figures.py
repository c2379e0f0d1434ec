"""Figures: fixed-range depth colours, normals from depth, sample sheets and PLY point clouds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from dag_core.errors import DagError
from dag_core.figures import (
    LABEL_WIDTH,
    PAD,
    backproject,
    colorize_depth,
    focal_length,
    normals_from_depth,
    normals_to_rgb,
    sample_sheet,
    tile_scale,
    write_ply,
)


def plane_depth(normal: np.ndarray, offset: float, h: int, w: int, fov_deg: float) -> np.ndarray:
    """Depth of the plane n · P = offset seen through the pinhole camera of dag_core.figures."""
    f = focal_length(w, fov_deg)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u - (w - 1) / 2) / f, (v - (h - 1) / 2) / f, np.ones((h, w))], axis=-1)
    return offset / (rays @ normal)


def test_colorize_uses_fixed_range() -> None:
    a = np.full((4, 4), 3.0)
    b = np.linspace(0.5, 9.5, 16).reshape(4, 4)
    b[1, 2] = 3.0
    ca, cb = colorize_depth(a, 0.5, 10.0), colorize_depth(b, 0.5, 10.0)
    assert ca.dtype == np.uint8 and ca.shape == (4, 4, 3)
    np.testing.assert_array_equal(ca[0, 0], cb[1, 2])
    assert not np.array_equal(cb[0, 0], cb[3, 3])
    # a different range changes the colour of the same depth
    assert not np.array_equal(colorize_depth(a, 0.5, 5.0)[0, 0], ca[0, 0])
    # clipping and invalid pixels
    np.testing.assert_array_equal(
        colorize_depth(np.array([[20.0, 10.0]]), 0.5, 10.0)[0, 0],
        colorize_depth(np.array([[10.0]]), 0.5, 10.0)[0, 0],
    )
    np.testing.assert_array_equal(colorize_depth(np.array([[0.0, np.nan]]), 0.5, 10.0), 0)
    assert colorize_depth(np.stack([a, b]), 0.5, 10.0).shape == (2, 4, 4, 3)
    with pytest.raises(DagError, match="colormap"):
        colorize_depth(a, 0.5, 10.0, cmap="no-such-map")
    with pytest.raises(DagError, match="range"):
        colorize_depth(a, 10.0, 0.5)


def test_normals_of_tilted_plane_match_the_analytic_normal() -> None:
    fov = 60.0
    normal = np.array([0.3, 0.5, -1.0])
    normal /= np.linalg.norm(normal)
    depth = plane_depth(normal, -2.0, 24, 32, fov)
    assert np.all(depth > 0)
    n = normals_from_depth(depth, fov)
    assert n.dtype == np.float32 and n.shape == (24, 32, 3)
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(n, np.broadcast_to(normal, n.shape), atol=1e-4)
    # the same plane with the wrong field of view is no longer a plane: normals vary
    assert np.abs(normals_from_depth(depth, 90.0) - normal).max() > 1e-2


def test_normals_of_fronto_parallel_plane_point_at_the_camera() -> None:
    n = normals_from_depth(np.full((10, 14), 2.5), 60.0)
    np.testing.assert_allclose(n, np.broadcast_to([0.0, 0.0, -1.0], n.shape), atol=1e-6)
    rgb = normals_to_rgb(n)
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[5, 7], [128, 128, 255])


def test_normals_blank_invalid_pixels() -> None:
    depth = np.full((8, 8), 2.0)
    depth[3, 4] = 0.0
    n = normals_from_depth(depth)
    assert np.all(n[3, 4] == 0) and np.all(n[2, 4] == 0) and np.all(n[3, 5] == 0)
    assert np.linalg.norm(n[0, 0]) == pytest.approx(1.0, abs=1e-5)
    assert np.count_nonzero(np.any(n != 0, axis=-1)) == 64 - 5
    np.testing.assert_array_equal(normals_to_rgb(n)[3, 4], 0)


def test_write_ply_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 5.0, (6, 8)).astype(np.float32)
    depth[0, 0], depth[2, 3] = 0.0, np.nan
    path = write_ply(tmp_path / "cloud.ply", rgb, depth, fov_deg=70.0)
    raw = path.read_bytes()
    header, body = raw.split(b"end_header\n", 1)
    lines = header.decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    assert "element vertex 46" in lines
    props = [ln.split()[-1] for ln in lines if ln.startswith("property")]
    assert props == ["x", "y", "z", "red", "green", "blue"]
    vertex = np.dtype(
        [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")]
    )
    data = np.frombuffer(body, dtype=vertex)
    assert len(data) == 46
    valid = np.isfinite(depth) & (depth > 0)
    points = backproject(depth, 70.0)[valid]
    np.testing.assert_allclose(data["z"], -depth[valid], rtol=1e-6)
    np.testing.assert_allclose(data["x"], points[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data["y"], -points[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.stack([data["r"], data["g"], data["b"]], -1), rgb[valid])
    with pytest.raises(DagError, match="depth shape"):
        write_ply(tmp_path / "bad.ply", rgb, depth[:, :4])


def test_backproject_uses_horizontal_fov() -> None:
    points = backproject(np.full((3, 5), 2.0), 90.0)
    # with a 90° horizontal FOV the image half-width spans x = ±z at the outer pixel edges
    f = 2.5 / math.tan(math.radians(45))
    assert points[1, 4, 0] == pytest.approx(2.0 * 2.0 / f)
    assert points[1, 2, :2] == pytest.approx([0.0, 0.0])


def test_sample_sheet_layout(tmp_path) -> None:
    rng = np.random.default_rng(1)
    n, h, w = 5, 16, 24
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 8.0, (n, h, w)).astype(np.float32)
    rows = {"unguided": (images, depth), "DAG (DCG+DPG)": (images[:3], depth[:3])}
    path = sample_sheet(
        rows, tmp_path / "fig" / "sheet.png", min_depth=0.5, max_depth=10.0, max_columns=4
    )
    s = tile_scale(h, w)
    assert s * h >= 96
    with Image.open(path) as img:
        assert img.format == "PNG"
        width, height = img.size
        sheet = np.asarray(img.convert("RGB"))
    assert width == LABEL_WIDTH + 4 * (s * w + PAD) + PAD
    assert height == 2 * 3 * (s * h + PAD) + PAD
    assert (width - LABEL_WIDTH - PAD) / (height - PAD) == pytest.approx(
        (4 * (s * w + PAD)) / (6 * (s * h + PAD))
    )
    # first tile of the first row is the first image, upscaled; second set's depth row is coloured
    x0, y0 = LABEL_WIDTH + PAD, PAD
    np.testing.assert_array_equal(sheet[y0 : y0 + s * h : s, x0 : x0 + s * w : s], images[0])
    y_depth2 = PAD + 4 * (s * h + PAD)
    np.testing.assert_array_equal(
        sheet[y_depth2 : y_depth2 + s * h : s, x0 : x0 + s * w : s],
        colorize_depth(depth[0], 0.5, 10.0),
    )
    # the second set has 3 samples: its 4th column is background
    x3 = LABEL_WIDTH + PAD + 3 * (s * w + PAD)
    assert np.all(sheet[y_depth2 : y_depth2 + s * h, x3 : x3 + s * w] == 255)
    # labels are drawn in the left column
    assert np.any(sheet[:, :LABEL_WIDTH] < 128)
    with pytest.raises(DagError, match="image size"):
        sample_sheet(
            {"a": (images, depth), "b": (images[:, :8], depth[:, :8])},
            tmp_path / "x.png",
            min_depth=0.5,
            max_depth=10.0,
        )
