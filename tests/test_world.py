"""The procedural world: determinism, exact depth, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dag_core.errors import DagError
from dag_core.world import WorldConfig, _scene_params, iter_scenes, main, render, render_one


@pytest.mark.parametrize("res", [16, 32, 48, 64])
def test_shapes_dtypes_and_depth_range(res: int) -> None:
    rgb, depth = render([0, 1, 2], res)
    assert rgb.shape == (3, res, res, 3) and rgb.dtype == torch.uint8
    assert depth.shape == (3, res, res) and depth.dtype == torch.float32
    assert torch.isfinite(depth).all() and depth.min() >= 0.5 and depth.max() <= 10.0
    assert rgb.float().std() > 5  # textured, shaded, not a flat colour


def test_scene_does_not_depend_on_batch() -> None:
    rgb, depth = render([5, 11, 42], 40)
    rgb_one, depth_one = render_one(11, 40)
    assert np.array_equal(rgb[1].numpy(), rgb_one) and np.array_equal(depth[1].numpy(), depth_one)
    rgb2, depth2 = render([11], 40)
    assert torch.equal(rgb2[0], rgb[1]) and torch.equal(depth2[0], depth[1])
    assert not torch.equal(rgb[0], rgb[1])
    seeds = [s for s, _, _ in iter_scenes(40, 5, 32, batch_size=2)]
    assert seeds == [40, 41, 42, 43, 44]


@pytest.mark.parametrize("res", [17, 33])
def test_scene_does_not_depend_on_batch_size_or_position(res: int) -> None:
    """Across render chunks and odd sizes (SIMD tails): every scene equals its solo render."""
    rgb, depth = render(range(100, 120), res)
    for j in (0, 7, 8, 13, 19):
        rgb_one, depth_one = render_one(100 + j, res)
        assert np.array_equal(rgb[j].numpy(), rgb_one)
        assert np.array_equal(depth[j].numpy(), depth_one)
    streamed = {s: (r, d) for s, r, d in iter_scenes(105, 6, res, batch_size=4)}
    assert np.array_equal(streamed[108][0], rgb[8].numpy())
    assert np.array_equal(streamed[108][1], depth[8].numpy())


def test_depth_is_z_depth_and_within_the_room() -> None:
    """Empty rooms: no pixel is deeper than the room's diagonal, and the bottom row (floor or
    near wall) is nearer than the image centre row in most scenes."""
    seeds = list(range(30))
    _, depth = render(seeds, 32, WorldConfig(max_objects=0))
    nearer = 0
    for j, s in enumerate(seeds):
        room = _scene_params(s, 0)["room"]
        assert depth[j].max().item() <= float(np.linalg.norm(room)) + 1e-3
        nearer += int(depth[j, -1].mean() < depth[j, 16].mean())
    assert nearer >= 25


def test_floor_depth_matches_ray_plane_geometry() -> None:
    """Bottom-centre pixel with no furniture: z-depth equals the analytic floor intersection."""
    res = 64
    for seed in range(200):
        p = _scene_params(seed, 0)
        _, depth = render([seed], res, WorldConfig(max_objects=0))
        yaw, pitch, fov = p["angles"]
        # pixel row res-1, between the two centre columns → u ≈ 0, v = -(1 - 1/res)
        v = -(1 - 1 / res)
        f = 1 / math.tan(fov / 2)
        dy = v * math.cos(pitch) + f * math.sin(pitch)
        dz = -v * math.sin(pitch) + f * math.cos(pitch)
        if dy >= -1e-3:
            continue
        t_over_norm = p["cam"][1] / -dy  # ray parameter per unnormalised direction to y = 0
        z_depth = t_over_norm * f  # optical-axis component of the unnormalised ray is f
        hit_x = p["cam"][0] + t_over_norm * (0 * math.cos(yaw) + dz * math.sin(yaw))
        hit_z = p["cam"][2] + t_over_norm * (dz * math.cos(yaw))
        if not (0.1 < hit_x < p["room"][0] - 0.1 and 0.1 < hit_z < p["room"][2] - 0.1):
            continue  # the ray meets a wall first
        measured = 0.5 * (depth[0, res - 1, res // 2 - 1] + depth[0, res - 1, res // 2]).item()
        assert measured == pytest.approx(z_depth, rel=0.05)
        return
    pytest.fail("no scene with a visible floor centre found")


def test_bad_inputs() -> None:
    with pytest.raises(DagError, match="resolution"):
        render([0], 8)
    with pytest.raises(DagError, match="-3"):
        render([-3], 32)
    with pytest.raises(DagError, match="0 < min < max"):
        WorldConfig(min_depth=5.0, max_depth=1.0)
    with pytest.raises(DagError, match="no world seeds"):
        render([], 32)
    with pytest.raises(DagError, match="2048"):
        render_one(0, 2048)
    with pytest.raises(DagError, match="max_objects"):
        WorldConfig(max_objects=-1)
    with pytest.raises(DagError, match="0 < min < max"):
        WorldConfig(min_depth=0.0)


def test_preview_cli(tmp_path: Path) -> None:
    path = main(["--out", str(tmp_path), "--n", "3", "--resolution", "32"])
    assert path.is_file() and path.stat().st_size > 1000
