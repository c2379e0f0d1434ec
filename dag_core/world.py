"""The procedural world: rendered rooms with exact metric depth (the embedded default data).

Nothing can be downloaded here, so the pipeline ships its own indoor-like domain: a box-shaped room
(floor, ceiling, four walls) with up to ``max_objects`` pieces of furniture (boxes standing on the
floor, each turned about the vertical axis), textured (floor planks or tiles, tinted walls with a
skirting board, a door and a window, per-object colours) and Lambertian-shaded by a ceiling light,
seen by a pinhole camera at a random position, yaw, pitch and field of view. Depth is the z-depth
along the optical axis in metres, like NYU-Depth v2 (≈ 0.5–10 m), exact for every pixel.

Rendering is vectorised ray casting in torch: the room is the exit point of each ray from an
axis-aligned box (slab method), furniture the nearest entry into an oriented box. Every scene's
parameters come from its own ``numpy.random.default_rng(seed)`` and all arithmetic is elementwise
per scene, so a scene's pixels do not depend on the other seeds in the batch.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dag_core.atomic import save_figure
from dag_core.errors import DagError

MIN_RESOLUTION, MAX_RESOLUTION = 16, 1024
RENDER_CHUNK = 8


@dataclass(frozen=True)
class WorldConfig:
    """Depth range the renderer clamps to, and the most furniture boxes per room."""

    min_depth: float = 0.5
    max_depth: float = 10.0
    max_objects: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.min_depth < self.max_depth:
            raise DagError(
                f"world depth range must satisfy 0 < min < max, "
                f"got {self.min_depth}..{self.max_depth}"
            )
        if not 0 <= self.max_objects <= 16:
            raise DagError(f"max_objects must be in 0..16, got {self.max_objects}")


def _scene_params(seed: int, max_objects: int) -> dict[str, np.ndarray]:
    """All random choices of one scene (float64 numpy; converted to float32 tensors later)."""
    rng = np.random.default_rng(seed)
    room = np.array([rng.uniform(3.0, 6.5), rng.uniform(2.4, 3.1), rng.uniform(3.5, 8.0)])
    cam = np.array(
        [rng.uniform(0.25, 0.75) * room[0], rng.uniform(1.0, 1.7), rng.uniform(0.1, 0.3) * room[2]]
    )
    yaw, pitch = rng.uniform(-0.6, 0.6), rng.uniform(-0.35, 0.05)
    fov = math.radians(rng.uniform(55.0, 70.0))
    boxes = np.zeros((max_objects, 8))  # cx, cz, hx, hy, hz, angle, active, colour index
    colours = np.zeros((max_objects, 3))
    for k in range(int(rng.integers(1, max_objects + 1)) if max_objects else 0):
        kind = rng.integers(0, 3)  # 0 bed, 1 table/desk, 2 cabinet
        hx, hy, hz = [(0.8, 0.25, 1.0), (0.5, 0.38, 0.35), (0.3, 0.8, 0.25)][kind]
        hx, hz = hx * rng.uniform(0.8, 1.3), hz * rng.uniform(0.8, 1.3)
        hy *= rng.uniform(0.8, 1.2)
        angle = rng.choice([0.0, math.pi / 2]) + rng.uniform(-0.3, 0.3)
        for _ in range(10):  # keep the camera outside the furniture
            cx = rng.uniform(0.1, 0.9) * room[0]
            cz = rng.uniform(0.35, 0.95) * room[2]
            if math.hypot(cx - cam[0], cz - cam[2]) > max(hx, hz) + 0.7:
                break
        else:
            continue
        boxes[k] = [cx, cz, hx, hy, hz, angle, 1.0, kind]
        colours[k] = rng.uniform(0.15, 0.9, size=3)
    wall = rng.uniform(0.45, 0.95, size=3) * rng.uniform(0.8, 1.0, size=(4, 3))
    floor = rng.uniform(0.25, 0.7, size=3) * np.array([1.0, 0.8, 0.6])
    light = np.array(
        [rng.uniform(0.3, 0.7) * room[0], room[1] - 0.05, rng.uniform(0.3, 0.8) * room[2]]
    )
    # A door and a window on two different walls (0, 1: x = 0 / x = W; 2, 3: z = 0 / z = D).
    door_wall = int(rng.integers(0, 4))
    window_wall = (door_wall + int(rng.integers(1, 4))) % 4
    length = [room[2], room[2], room[0], room[0]]
    openings = np.array(
        [
            door_wall,
            rng.uniform(0.2, 0.8) * length[door_wall],
            window_wall,
            rng.uniform(0.3, 0.7) * length[window_wall],
            rng.uniform(0.4, 0.8),
        ]
    )
    return {
        "room": room,
        "cam": cam,
        "angles": np.array([yaw, pitch, fov]),
        "boxes": boxes,
        "colours": colours,
        "wall": wall,
        "floor": floor,
        "floor_style": np.array([rng.integers(0, 2), rng.uniform(0.12, 0.3)]),
        "light": light,
        "openings": openings,
        "door": rng.uniform(0.25, 0.6, size=3) * np.array([1.0, 0.75, 0.5]),
    }


def _stack(params: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {
        k: torch.tensor(np.stack([p[k] for p in params]), dtype=torch.float32) for k in params[0]
    }


def _hash_noise(p: torch.Tensor, scale: float) -> torch.Tensor:
    """Deterministic pseudo-random texture in [0, 1) from 3-D points (elementwise)."""
    q = torch.floor(p * scale)
    h = torch.sin(q[..., 0] * 12.9898 + q[..., 1] * 78.233 + q[..., 2] * 37.719) * 43758.5453
    return h - torch.floor(h)


def _render_batch(
    p: dict[str, torch.Tensor], res: int, cfg: WorldConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    b = p["room"].shape[0]
    yaw, pitch, fov = (p["angles"][:, i, None] for i in range(3))
    # Camera rays: pixel (u, v) in normalised image coordinates, pitch (about x), yaw (about y).
    lin = (torch.arange(res, dtype=torch.float32) + 0.5) / res * 2 - 1
    v, u = torch.meshgrid(-lin, lin, indexing="ij")
    f = 1.0 / torch.tan(fov / 2)  # (B, 1)
    u, v = u.reshape(1, -1).expand(b, -1), v.reshape(1, -1).expand(b, -1)
    cx, sx = torch.cos(pitch), torch.sin(pitch)
    dy, dz = v * cx + f * sx, -v * sx + f * cx
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    dx, dz = u * cy + dz * sy, -u * sy + dz * cy
    norm = torch.sqrt(dx * dx + dy * dy + dz * dz)
    d = torch.stack([dx / norm, dy / norm, dz / norm], -1)  # (B, N, 3)
    forward = torch.stack([sy * cx, sx, cy * cx], -1)  # (B, 1, 3): optical axis
    o = p["cam"][:, None, :]

    # Room: exit from the box [0, room] (slab method); the exit axis gives the surface.
    room = p["room"][:, None, :]
    safe = torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t_axes = torch.where(d > 0, (room - o) / safe, (0 - o) / safe)
    t_axes = torch.where(d.abs() < 1e-9, torch.full_like(d, 1e9), t_axes)
    t_room, axis = t_axes.min(-1)
    positive = torch.gather(d, -1, axis[..., None])[..., 0] > 0
    normal = (
        -torch.nn.functional.one_hot(axis, 3).float() * torch.where(positive, 1.0, -1.0)[..., None]
    )

    # Furniture: nearest entry into each oriented box standing on the floor.
    t_hit = t_room
    surf = axis * 2 + positive.long()  # 0..5: x-, x+, floor, ceiling, z-, z+
    box_colour = torch.zeros_like(d)
    for k in range(p["boxes"].shape[1]):
        bx = p["boxes"][:, k]
        active = bx[:, 6:7] > 0
        ca, sa = torch.cos(bx[:, 5:6]), torch.sin(bx[:, 5:6])
        rx, rz = o[..., 0] - bx[:, 0:1], o[..., 2] - bx[:, 1:2]
        lo = torch.stack([rx * ca - rz * sa, o[..., 1] - bx[:, 3:4], rx * sa + rz * ca], -1)
        ld = torch.stack(
            [d[..., 0] * ca - d[..., 2] * sa, d[..., 1], d[..., 0] * sa + d[..., 2] * ca], -1
        )
        half = bx[:, None, 2:5]
        lds = torch.where(ld.abs() < 1e-9, torch.full_like(ld, 1e-9), ld)
        t1, t2 = (-half - lo) / lds, (half - lo) / lds
        tn, tf = torch.minimum(t1, t2), torch.maximum(t1, t2)
        t_near, near_axis = tn.max(-1)
        t_far = tf.min(-1).values
        hit = active & (t_near < t_far) & (t_near > 1e-4) & (t_near < t_hit)
        sign = -torch.sign(torch.gather(ld, -1, near_axis[..., None]))[..., 0]
        local_n = torch.nn.functional.one_hot(near_axis, 3).float() * sign[..., None]
        world_n = torch.stack(
            [
                local_n[..., 0] * ca + local_n[..., 2] * sa,
                local_n[..., 1],
                -local_n[..., 0] * sa + local_n[..., 2] * ca,
            ],
            -1,
        )
        t_hit = torch.where(hit, t_near, t_hit)
        normal = torch.where(hit[..., None], world_n, normal)
        surf = torch.where(hit, 6 + near_axis, surf)
        top = (near_axis == 1).float()[..., None] * 0.15
        box_colour = torch.where(hit[..., None], p["colours"][:, k, None, :] + top, box_colour)

    x = o + d * t_hit[..., None]
    # Albedo per surface: floor texture, tinted walls, light ceiling, furniture colours.
    ix = torch.arange(4)
    wall_surf = torch.stack([surf == s for s in (0, 1, 4, 5)], -1).float()  # (B, N, 4)
    walls = (wall_surf[..., None] * p["wall"][:, None, ix, :]).sum(-2)
    plank_w = p["floor_style"][:, 1:2]
    planks = torch.floor(x[..., 0] / plank_w)
    plank_tint = 0.8 + 0.4 * _hash_noise(torch.stack([planks, planks * 0, planks * 0], -1), 1.0)
    tiles = ((torch.floor(x[..., 0] / 0.6) + torch.floor(x[..., 2] / 0.6)) % 2) * 0.35 + 0.65
    floor_tex = torch.where(p["floor_style"][:, 0:1] > 0.5, tiles, plank_tint)
    floor = p["floor"][:, None, :] * floor_tex[..., None]
    # Wall details (texture only; the geometry and depth stay the room box): skirting board,
    # a door reaching the floor and a window with a cross-shaped frame.
    wall_id = torch.where(surf < 2, surf, surf - 2)
    on_wall = (surf < 2) | (surf == 4) | (surf == 5)
    along = torch.where(surf < 2, x[..., 2], x[..., 0])
    y, op = x[..., 1], p["openings"]
    door = on_wall & (wall_id == op[:, 0:1]) & ((along - op[:, 1:2]).abs() < 0.45) & (y < 2.0)
    win_dx, win_dy = (along - op[:, 3:4]).abs(), (y - 1.45).abs()
    window = on_wall & (wall_id == op[:, 2:3]) & (win_dx < op[:, 4:5]) & (win_dy < 0.5)
    frame = window & ((win_dx < 0.03) | (win_dx > op[:, 4:5] - 0.05) | (win_dy > 0.45))
    walls = torch.where((on_wall & (y < 0.09))[..., None], torch.full_like(walls, 0.9), walls)
    walls = torch.where(door[..., None], p["door"][:, None, :], walls)
    albedo = torch.where((surf == 2)[..., None], floor, walls)
    albedo = torch.where((surf == 3)[..., None], torch.full_like(albedo, 0.92), albedo)
    albedo = torch.where((surf >= 6)[..., None], box_colour, albedo)
    albedo = albedo * (0.9 + 0.1 * _hash_noise(x, 40.0))[..., None]

    to_light = p["light"][:, None, :] - x
    dist2 = (to_light * to_light).sum(-1, keepdim=True)
    diffuse = ((normal * to_light).sum(-1, keepdim=True) / dist2.sqrt()).clamp(min=0)
    shade = 0.3 + 1.1 * diffuse / (1 + 0.06 * dist2)
    sky = torch.tensor([0.8, 0.9, 1.0]) * (1.0 - 0.25 * (y[..., None] - 0.95))  # lit from outside
    rgb = torch.where((window & ~frame)[..., None], sky, albedo * shade)
    rgb = torch.where(frame[..., None], torch.full_like(rgb, 0.95), rgb).clamp(0, 1) ** (1 / 2.2)
    depth = (t_hit[..., None] * (d * forward).sum(-1, keepdim=True))[..., 0]
    depth = depth.clamp(cfg.min_depth, cfg.max_depth)
    rgb8 = (rgb * 255).round().to(torch.uint8).reshape(b, res, res, 3)
    return rgb8, depth.reshape(b, res, res)


def _check(seeds: Sequence[int], resolution: int) -> None:
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise DagError(
            f"world resolution must be in {MIN_RESOLUTION}..{MAX_RESOLUTION}, got {resolution}"
        )
    bad = [s for s in seeds if int(s) < 0]
    if bad:
        raise DagError(f"world seeds must be non-negative, got {bad[0]}")


def render(
    seeds: Sequence[int], resolution: int, config: WorldConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render scenes: rgb uint8 (B, H, W, 3) and z-depth float32 (B, H, W) in metres."""
    cfg = config or WorldConfig()
    seeds = [int(s) for s in seeds]
    _check(seeds, resolution)
    if not seeds:
        raise DagError("no world seeds given")
    params = [_scene_params(s, cfg.max_objects) for s in seeds]
    rgb, depth = [], []
    with torch.no_grad():  # chunks of a few scenes keep every intermediate in cache
        for i in range(0, len(params), RENDER_CHUNK):
            r, d = _render_batch(_stack(params[i : i + RENDER_CHUNK]), resolution, cfg)
            rgb.append(r)
            depth.append(d)
    return torch.cat(rgb), torch.cat(depth)


def render_one(
    seed: int, resolution: int, config: WorldConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One scene as numpy: rgb uint8 (H, W, 3), depth float32 (H, W) metres."""
    rgb, depth = render([seed], resolution, config)
    return rgb[0].numpy(), depth[0].numpy()


def iter_scenes(
    start_seed: int,
    count: int,
    resolution: int,
    batch_size: int = 64,
    config: WorldConfig | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(seed, rgb, depth)`` for seeds ``start_seed … start_seed + count − 1``."""
    for first in range(start_seed, start_seed + count, batch_size):
        seeds = list(range(first, min(first + batch_size, start_seed + count)))
        rgb, depth = render(seeds, resolution, config)
        for j, s in enumerate(seeds):
            yield s, rgb[j].numpy(), depth[j].numpy()


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m dag_core.world --out DIR``: a preview grid of scenes and their depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(prog="python -m dag_core.world", description=main.__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rgb, depth = render(range(args.seed, args.seed + args.n), args.resolution)
    cfg = WorldConfig()
    fig, axes = plt.subplots(2, args.n, figsize=(1.2 * args.n, 2.6), squeeze=False)
    for j in range(args.n):
        axes[0, j].imshow(rgb[j].numpy())
        axes[1, j].imshow(depth[j].numpy(), cmap="turbo", vmin=cfg.min_depth, vmax=cfg.max_depth)
        for ax in axes[:, j]:
            ax.axis("off")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = save_figure(fig, out / "world_preview.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(main())
