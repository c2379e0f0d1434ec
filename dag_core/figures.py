"""Figures in the style of the DAG paper (Kim et al., arXiv 2212.08861, Fig. 1): sample sheets of
generated images with their depth and surface normals, and point clouds.

* :func:`colorize_depth` — depth in metres → RGB with a FIXED range, so the same depth has the same
  colour in every panel and every run;
* :func:`normals_from_depth` / :func:`normals_to_rgb` — surface normals by back-projecting depth
  through a pinhole camera (:func:`backproject`) and crossing the finite differences of the 3-D
  points;
* :func:`sample_sheet` — per named set (e.g. "unguided", "DAG (DCG+DPG)") three rows: images,
  colourised depth, normals; column ``j`` of every set is the same seed;
* :func:`write_ply` — a coloured point cloud (binary little-endian PLY).

Camera convention (:func:`backproject`): horizontal field of view ``fov_deg``, square pixels,
principal point at the image centre; camera frame x right, y down, z forward (depth = z).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from dag_core.atomic import atomic_open, atomic_path, save_figure
from dag_core.errors import DagError

LABEL_WIDTH = 160
PAD = 2
MIN_TILE = 96
ROW_KINDS = ("image", "depth", "normals")
BACKGROUND = (255, 255, 255)


def _valid(depth: np.ndarray) -> np.ndarray:
    """Pixels with a usable depth (finite and > 0)."""
    return np.isfinite(depth) & (depth > 0)


def colorize_depth(
    depth_m: np.ndarray, min_depth: float, max_depth: float, cmap: str = "turbo"
) -> np.ndarray:
    """Depth (H, W) or (N, H, W) in metres → uint8 (..., 3) through matplotlib colormap ``cmap``.

    ``min_depth`` maps to the low end of the colormap and ``max_depth`` to the high end, whatever
    the data; values outside are clipped; invalid depth (≤ 0 or non-finite) is black.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim not in (2, 3):
        raise DagError(f"depth must be (H, W) or (N, H, W), got shape {depth.shape}")
    if not 0 <= min_depth < max_depth:
        raise DagError(f"colour range must satisfy 0 <= min < max, got {min_depth}..{max_depth}")
    try:
        colormap = colormaps[cmap]
    except KeyError as exc:
        raise DagError(f"unknown matplotlib colormap {cmap!r}") from exc
    valid = _valid(depth)
    t = np.clip((np.where(valid, depth, min_depth) - min_depth) / (max_depth - min_depth), 0, 1)
    rgb = colormap(t, bytes=True)[..., :3]
    rgb[~valid] = 0
    return rgb


def focal_length(width: int, fov_deg: float) -> float:
    """Focal length in pixels for a horizontal field of view ``fov_deg`` over ``width`` pixels."""
    if not 0 < fov_deg < 180:
        raise DagError(f"fov_deg must be in (0, 180), got {fov_deg}")
    return (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)


def backproject(depth_m: np.ndarray, fov_deg: float = 60.0) -> np.ndarray:
    """3-D points (H, W, 3) float64 in the camera frame (x right, y down, z = depth forward)."""
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2:
        raise DagError(f"depth must be (H, W), got shape {depth.shape}")
    h, w = depth.shape
    f = focal_length(w, fov_deg)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    x = (u - (w - 1) / 2.0) / f * depth
    y = (v - (h - 1) / 2.0) / f * depth
    return np.stack([x, y, depth], axis=-1)


def normals_from_depth(depth_m: np.ndarray, fov_deg: float = 60.0) -> np.ndarray:
    """Unit surface normals float32 (H, W, 3) in the camera frame, facing the camera.

    n ∝ ∂P/∂u × ∂P/∂v of the back-projected points P (central differences, one-sided at the
    border), flipped so that n · P < 0. Both differences lie in the surface, so a plane gets its
    exact normal everywhere. Pixels whose depth or difference neighbours are invalid get (0, 0, 0).
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2 or min(depth.shape) < 2:
        raise DagError(f"depth must be (H, W) with H, W >= 2, got shape {depth.shape}")
    valid = _valid(depth)
    points = backproject(np.where(valid, depth, 1.0), fov_deg)
    dv, du = np.gradient(points, axis=(0, 1))
    n = np.cross(du, dv)
    n *= np.where(np.sum(n * points, axis=-1, keepdims=True) > 0, -1.0, 1.0)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    padded = np.pad(valid, 1, mode="edge")
    h, w = depth.shape
    ok = valid.copy()
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        ok &= padded[dy : dy + h, dx : dx + w]
    ok &= length[..., 0] > 0
    n = np.where(ok[..., None], n / np.where(length > 0, length, 1.0), 0.0)
    return n.astype(np.float32)


def normals_to_rgb(normals: np.ndarray) -> np.ndarray:
    """Unit normals (..., 3) in the camera frame → uint8 (..., 3), the usual normal-map colours.

    Normals are shown in the OpenGL view frame (x right, y up, z towards the viewer):
    rgb = 255 · (1 + (n_x, −n_y, −n_z)) / 2, so a wall facing the camera is (128, 128, 255);
    zero vectors (invalid pixels) are black.
    """
    n = np.asarray(normals, dtype=np.float64)
    if n.shape[-1:] != (3,):
        raise DagError(f"normals must have a last axis of 3, got shape {n.shape}")
    view = n * np.array([1.0, -1.0, -1.0])
    rgb = np.clip(np.rint((view + 1.0) * 127.5), 0, 255).astype(np.uint8)
    rgb[~np.any(n != 0, axis=-1)] = 0
    return rgb


def tile_scale(height: int, width: int) -> int:
    """Integer upscaling of each tile of a sample sheet so its short side is >= ``MIN_TILE``."""
    return max(1, math.ceil(MIN_TILE / min(height, width)))


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font (scalable where Pillow ships it)."""
    try:
        return ImageFont.load_default(size=14)
    except TypeError:
        return ImageFont.load_default()


def _check_set(name: str, images: np.ndarray, depth: np.ndarray) -> None:
    """DagError unless ``images`` is uint8 (N, H, W, 3) and ``depth`` (N, H, W) matches it."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DagError(
            f"sample_sheet {name!r}: images must be uint8 (N, H, W, 3), got "
            f"{images.dtype} {images.shape}"
        )
    if depth.shape != images.shape[:3]:
        raise DagError(
            f"sample_sheet {name!r}: depth shape {depth.shape} != images {images.shape[:3]}"
        )
    if images.shape[0] < 1:
        raise DagError(f"sample_sheet {name!r}: no samples")


def sample_sheet(
    rows: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    min_depth: float,
    max_depth: float,
    fov_deg: float = 60.0,
    max_columns: int = 8,
) -> Path:
    """Write a PNG grid: per named set, rows of images, colourised depth and normals.

    ``rows`` maps a set name to (images uint8 (N, H, W, 3), depth metres (N, H, W)); all sets share
    H × W, and column ``j`` should be the same seed in every set. The first ``max_columns``
    samples are shown. Layout in pixels, with s = :func:`tile_scale` (H, W)::

        width  = LABEL_WIDTH + columns · (s·W + PAD) + PAD
        height = 3 · sets · (s·H + PAD) + PAD

    Depth is coloured over the fixed range ``min_depth..max_depth`` (:func:`colorize_depth`).
    """
    if not rows:
        raise DagError("sample_sheet got no sets")
    if max_columns < 1:
        raise DagError(f"max_columns must be >= 1, got {max_columns}")
    sets = {name: (np.asarray(img), np.asarray(dep)) for name, (img, dep) in rows.items()}
    for name, (images, depth) in sets.items():
        _check_set(name, images, depth)
    shapes = {images.shape[1:3] for images, _ in sets.values()}
    if len(shapes) != 1:
        raise DagError(f"sample_sheet sets differ in image size: {sorted(shapes)}")
    (h, w) = shapes.pop()
    s = tile_scale(h, w)
    th, tw = s * h, s * w
    columns = min(max_columns, max(images.shape[0] for images, _ in sets.values()))
    sheet = Image.new(
        "RGB",
        (LABEL_WIDTH + columns * (tw + PAD) + PAD, 3 * len(sets) * (th + PAD) + PAD),
        BACKGROUND,
    )
    draw, font = ImageDraw.Draw(sheet), _font()
    top = PAD
    for name, (images, depth) in sets.items():
        n = min(columns, images.shape[0])
        panels = {
            "image": images[:n],
            "depth": colorize_depth(depth[:n], min_depth, max_depth),
            "normals": np.stack(
                [normals_to_rgb(normals_from_depth(d, fov_deg)) for d in depth[:n]]
            ),
        }
        for kind in ROW_KINDS:
            label = f"{name}\n{kind}" if kind == "image" else kind
            draw.multiline_text(
                (PAD + 4, top + th // 2), label, fill=(0, 0, 0), font=font, anchor="lm"
            )
            for j in range(n):
                tile = Image.fromarray(panels[kind][j]).resize((tw, th), Image.Resampling.NEAREST)
                sheet.paste(tile, (LABEL_WIDTH + PAD + j * (tw + PAD), top))
            top += th + PAD
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def write_ply(
    path: str | Path, rgb: np.ndarray, depth_m: np.ndarray, fov_deg: float = 60.0
) -> Path:
    """Write a binary little-endian PLY point cloud of the valid-depth pixels; return the path.

    One vertex per valid pixel in row-major order: ``x, y, z`` float32 and ``red, green, blue``
    uint8. Points are in the OpenGL camera frame (x right, y up, z towards the viewer, so the scene
    lies at z = −depth), which most viewers (MeshLab, Open3D, Blender) show upright.
    """
    rgb, depth = np.asarray(rgb), np.asarray(depth_m)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DagError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if depth.shape != rgb.shape[:2]:
        raise DagError(f"depth shape {depth.shape} != rgb shape {rgb.shape[:2]}")
    valid = _valid(depth)
    points = backproject(np.where(valid, depth, 0.0), fov_deg)[valid] * np.array([1.0, -1.0, -1.0])
    vertex = np.dtype(
        [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    data = np.empty(len(points), dtype=vertex)
    for axis, key in enumerate("xyz"):
        data[key] = points[:, axis]
    for channel, key in enumerate(("red", "green", "blue")):
        data[key] = rgb[valid][:, channel]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment DAG depth point cloud\n"
        f"element vertex {len(data)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(data.tobytes())
    return path


SWEEP_PANELS = (
    ("dfid", "dFID ↓"),
    ("fid", "FID ↓"),
    ("consistency_abs_rel", "label vs reference AbsRel ↓"),
)


def sweep_figure(series: Mapping[str, list[Mapping[str, float]]], path: str | Path) -> Path:
    """dFID, FID and image–label consistency vs guidance scale w (paper Fig. 8), one line per
    series (scale mode × window, remedy), 95 % CIs as error bars; x on a symmetric log scale.
    Rows with ``floor_<metric>`` add a dashed line: what held-out real images score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not series:
        raise DagError("sweep_figure needs at least one series")
    fig, axes = plt.subplots(1, len(SWEEP_PANELS), figsize=(4.2 * len(SWEEP_PANELS), 3.4))
    for ax, (key, title) in zip(axes, SWEEP_PANELS, strict=True):
        for name, rows in series.items():
            rows = [r for r in rows if key in r]
            if not rows:
                continue
            w = np.array([r["w"] for r in rows])
            y = np.array([r[key] for r in rows])
            lo = np.array([r.get(f"{key}_ci_lo", r[key]) for r in rows])
            hi = np.array([r.get(f"{key}_ci_hi", r[key]) for r in rows])
            ax.errorbar(w, y, yerr=[y - lo, hi - y], marker="o", capsize=3, label=name)
        floors = [
            r[f"floor_{key}"] for rows in series.values() for r in rows if f"floor_{key}" in r
        ]
        if floors:
            ax.axhline(floors[0], color="grey", linestyle="--", label="held-out real (floor)")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(left=-0.2)  # w >= 0: no empty negative half
        ax.set_xlabel("w (w_dc = w_dp; a remedy's w: README)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
