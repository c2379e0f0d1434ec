"""Depth heads MLP-S / MLP-W on frozen decoder features (paper, "Label-efficient training of depth
predictors").

Each head is a pixel-wise MLP d_t = MLP(g_t, t) on g_t = [f_t(k)]_{k∈blocks}, the decoder features
of the frozen diffusion U-Net (:mod:`dag_core.features`) bilinearly upsampled to the depth map size.
The strong branch MLP-S reads many layers (S = {2, 4, 5, 6, 7}), the weak branch MLP-W a single one
(W = {6}); their disagreement drives depth consistency guidance (paper Eq. 6). Both predict depth in
the normalised space of :class:`dag_core.depthnorm.DepthNorm` and are conditioned on t, because
guidance queries them at every denoising step.

Training (:func:`train_heads`) keeps the U-Net frozen and computes features on the fly for each
batch of noisy images x_t ~ q(x_t | x_0) with t uniform; nothing is cached, and memory is bounded by
regressing only ``pixels_per_image`` randomly chosen valid pixels per image, sampled directly from
the low-resolution feature maps (:func:`dag_core.features.sample_pixels`). The loss is L1 in the
normalised depth space.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import UNet2DModel
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from dag_core.atomic import atomic_path, write_text_atomic
from dag_core.configs.heads import HeadConfig
from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.features import (
    FeatureExtractor,
    check_blocks,
    decoder_layers,
    noise_images,
    sample_pixels,
    upsample_concat,
)

WEIGHTS_FILE = "heads.safetensors"
META_FILE = "heads.json"
FORMAT_VERSION = 1

#: ``(images in [-1, 1] (B, 3, H, W), depth in metres (B, 1, R, R))``
Batch = tuple[Tensor, Tensor]
Batches = Iterable[Batch] | Callable[[int], Batch]
#: ``(feature maps, side) -> g_t``: resize each map to side², concatenate on channels
Upsample = Callable[[Sequence[Tensor], int], Tensor]


class DepthHead(nn.Module):
    """Pixel-wise, t-conditioned MLP as 1×1 convolutions: (B, C, H, W) → (B, 1, H, W).

    Per hidden width h: 1×1 conv → SiLU → BatchNorm, plus a timestep embedding (diffusers
    sinusoidal ``Timesteps`` → ``TimestepEmbedding``) added to the activation; then a 1×1 conv to
    one channel of normalised depth. Works equally on full maps and on (B, C, P, 1) pixel samples.
    """

    def __init__(
        self, in_channels: int, hidden: Sequence[int] = (128, 64), time_dim: int = 64
    ) -> None:
        super().__init__()
        self.time_proj = Timesteps(time_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        widths = [in_channels, *hidden]
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 1), nn.SiLU(), nn.BatchNorm2d(c_out))
            for c_in, c_out in itertools.pairwise(widths)
        )
        self.time_embeddings = nn.ModuleList(TimestepEmbedding(time_dim, h) for h in hidden)
        self.out = nn.Conv2d(widths[-1], 1, 1)

    def forward(self, g: Tensor, t: Tensor | int) -> Tensor:
        """Normalised depth for features ``g`` at timestep(s) ``t`` (scalar or shape (B,))."""
        t = torch.as_tensor(t, device=g.device)
        if t.ndim == 0:
            t = t.expand(g.shape[0])
        emb = self.time_proj(t).to(g.dtype)
        h = g
        for layer, time_embedding in zip(self.layers, self.time_embeddings, strict=True):
            h = layer(h) + time_embedding(emb)[:, :, None, None]
        return self.out(h)


class HeadEnsemble(nn.Module):
    """K strong heads reading the same features; its output is the members' mean.

    Used for MLP-S when ``HeadConfig.ensemble`` > 1 (state-dict keys ``strong.members.<k>.*``);
    with K = 1 ``DepthHeads.strong`` is a plain :class:`DepthHead`, as before ensembles existed.
    """

    def __init__(self, members: Sequence[DepthHead]) -> None:
        super().__init__()
        if len(members) < 2:
            raise DagError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def member_outputs(self, g: Tensor, t: Tensor | int) -> Tensor:
        """Every member's normalised depth, stacked: (K, B, 1, H, W)."""
        return torch.stack([member(g, t) for member in self.members])

    def forward(self, g: Tensor, t: Tensor | int) -> Tensor:
        """The members' mean, (B, 1, H, W)."""
        return self.member_outputs(g, t).mean(dim=0)


def member_seed(seed: int, k: int) -> int:
    """The seed of ensemble member ``k`` >= 1's initial weights in a run seeded ``seed`` (member
    0 takes the run's own initialisation, so it starts as the single head of K = 1 does)."""
    state = np.random.SeedSequence([seed, k]).generate_state(1, dtype=np.uint32)[0]
    return int(state) & 0x7FFF_FFFF


@dataclass
class HeadOutputs:
    """One evaluation of the heads: d^S (the members' mean), d^W, and (K > 1) every member's map
    (K, B, 1, r, r), else None; all normalised depth."""

    strong: Tensor
    weak: Tensor
    members: Tensor | None = None


class DepthHeads(nn.Module):
    """MLP-S (``strong``) and MLP-W (``weak``) with everything needed to reuse them safely.

    ``layer_channels`` records the channel count of every decoder layer used, ``resolution`` the
    side of the depth maps the heads produce, ``base_hash`` the base U-Net they were trained on.
    With ``config.ensemble`` = K > 1, ``strong`` is a :class:`HeadEnsemble`: member 0 is drawn
    from the ambient RNG exactly where the single head is (before ``weak``), member k >= 1 from
    its own seed :func:`member_seed` (config.seed, k).
    """

    def __init__(
        self,
        config: HeadConfig,
        norm: DepthNorm,
        layer_channels: Mapping[int, int],
        resolution: int,
        base_hash: str | None = None,
        num_train_timesteps: int = 1000,
    ) -> None:
        super().__init__()
        self.config = config
        self.norm = norm
        self.layer_channels = {int(k): int(v) for k, v in layer_channels.items()}
        missing = [k for k in self.blocks if k not in self.layer_channels]
        if missing:
            raise DagError(f"layer_channels lacks decoder layer(s) {missing}")
        if resolution < 1:
            raise DagError(f"depth resolution must be >= 1, got {resolution}")
        self.resolution = int(resolution)
        self.base_hash = base_hash
        self.num_train_timesteps = int(num_train_timesteps)
        first = self._head(config.strong_blocks)
        weak = self._head(config.weak_blocks)  # drawn right after the first strong head
        self.strong: DepthHead | HeadEnsemble = first
        if config.ensemble > 1:
            others = []
            for k in range(1, config.ensemble):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(member_seed(config.seed, k))
                    others.append(self._head(config.strong_blocks))
            self.strong = HeadEnsemble([first, *others])
        self.weak = weak

    def _head(self, blocks: Sequence[int]) -> DepthHead:
        channels = sum(self.layer_channels[k] for k in blocks)
        return DepthHead(channels, self.config.hidden, self.config.time_dim)

    @property
    def strong_members(self) -> list[DepthHead]:
        """The K strong heads (``[strong]`` when K = 1)."""
        if isinstance(self.strong, HeadEnsemble):
            return list(self.strong.members)  # type: ignore[arg-type]
        return [self.strong]

    @property
    def blocks(self) -> tuple[int, ...]:
        """Sorted union of S and W: the block list to give :class:`FeatureExtractor`."""
        return tuple(sorted(set(self.config.strong_blocks) | set(self.config.weak_blocks)))

    def _by_block(self, features: Sequence[Tensor]) -> dict[int, Tensor]:
        if len(features) != len(self.blocks):
            raise DagError(
                f"expected {len(self.blocks)} feature maps (layers {list(self.blocks)}), "
                f"got {len(features)}"
            )
        dtype = self.weak.out.weight.dtype
        return {k: f.to(dtype) for k, f in zip(self.blocks, features, strict=True)}

    def forward(
        self,
        features: Sequence[Tensor],
        t: Tensor | int,
        *,
        resolution: int | None = None,
        upsample: Upsample = upsample_concat,
    ) -> tuple[Tensor, Tensor]:
        """(d^S_t, d^W_t), normalised depth maps (B, 1, r, r), r = ``resolution`` (default: the
        heads' own :attr:`resolution`).

        ``features`` are the raw decoder outputs for ``self.blocks`` in that order; ``upsample``
        resizes and concatenates them into g_t (bilinear ``F.interpolate`` by default; the
        runtime's deterministic form is :func:`dag_core.resize.upsample_concat_matrix`). The heads
        are pixel-wise, so a smaller ``resolution`` evaluates the same function on fewer pixels.
        """
        out = self.predict(features, t, resolution=resolution, upsample=upsample)
        return out.strong, out.weak

    def predict(
        self,
        features: Sequence[Tensor],
        t: Tensor | int,
        *,
        resolution: int | None = None,
        upsample: Upsample = upsample_concat,
    ) -> HeadOutputs:
        """:meth:`forward` that also returns every ensemble member's map (K > 1): the same
        computation, so d^S is bit for bit :meth:`forward`'s."""
        by_block = self._by_block(features)
        size = self.resolution if resolution is None else int(resolution)
        g_s = upsample([by_block[k] for k in self.config.strong_blocks], size)
        g_w = upsample([by_block[k] for k in self.config.weak_blocks], size)
        if isinstance(self.strong, HeadEnsemble):
            members = self.strong.member_outputs(g_s, t)
            return HeadOutputs(members.mean(dim=0), self.weak(g_w, t), members)
        return HeadOutputs(self.strong(g_s, t), self.weak(g_w, t))

    def save(self, directory: str | Path) -> Path:
        """Write ``heads.safetensors`` and ``heads.json`` into ``directory`` (each file
        atomically); return it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(state, tmp)
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.config.record(),
            "norm": self.norm.to_dict(),
            "layer_channels": {str(k): v for k, v in sorted(self.layer_channels.items())},
            "resolution": self.resolution,
            "base_hash": self.base_hash,
            "num_train_timesteps": self.num_train_timesteps,
        }
        write_text_atomic(directory / META_FILE, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> DepthHeads:
        """Rebuild heads saved by :meth:`save` (on CPU, in eval mode); folders written before
        ensembles existed load as K = 1."""
        directory = Path(directory)
        meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
        for path in (meta_path, weights_path):
            if not path.is_file():
                raise DagError(f"missing depth-head file {path}")
        try:
            meta = json.loads(meta_path.read_text())
            heads = cls(
                HeadConfig.from_dict(meta["config"]),
                DepthNorm.from_dict(meta["norm"]),
                {int(k): int(v) for k, v in meta["layer_channels"].items()},
                int(meta["resolution"]),
                base_hash=meta.get("base_hash"),
                num_train_timesteps=int(meta.get("num_train_timesteps", 1000)),
            )
        except DagError as exc:
            raise DagError(f"invalid depth-head metadata {meta_path}: {exc}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DagError(f"corrupt depth-head metadata {meta_path}: {exc!r}") from exc
        try:
            heads.load_state_dict(load_file(weights_path))
        except (SafetensorError, RuntimeError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise DagError(f"corrupt depth-head weights {weights_path}: {first}") from exc
        return heads.eval()

    def check_compatible(self, unet: UNet2DModel, base_hash: str | None = None) -> None:
        """Raise :class:`DagError` if these heads cannot read ``unet``'s decoder features."""
        layers = decoder_layers(unet)
        for k in self.blocks:
            if k >= len(layers):
                raise DagError(f"head block {k} out of range 0..{len(layers) - 1} for this U-Net")
            if layers[k].channels != self.layer_channels[k]:
                raise DagError(
                    f"decoder layer {k} has {layers[k].channels} channels in this U-Net but the "
                    f"heads were trained on {self.layer_channels[k]}"
                )
        if base_hash is not None and self.base_hash is not None and base_hash != self.base_hash:
            raise DagError(
                f"base model hash {base_hash} differs from the heads' base model {self.base_hash}"
            )


def random_batches(
    images: Tensor, depths: Tensor, batch_size: int, seed: int = 0
) -> Callable[[int], Batch]:
    """A ``step -> (images, depths)`` sampler of random minibatches, a function of step and seed."""
    n = images.shape[0]
    if n == 0 or depths.shape[0] != n:
        raise DagError(f"need matching non-empty images/depths, got {n} and {depths.shape[0]}")

    def batch(step: int) -> Batch:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        index = torch.randperm(n, generator=generator)[: min(batch_size, n)]
        return images[index], depths[index]

    return batch


def _batch_stream(batches: Batches, steps: int, log: Callable[[str], None]) -> Iterator[Batch]:
    """``steps`` batches from a ``step -> batch`` callable or a (re-iterated) iterable."""
    if callable(batches):
        yield from (batches(step) for step in range(steps))
        return
    step = 0
    while step < steps:
        epoch = 0
        for batch in batches:
            yield batch
            step, epoch = step + 1, epoch + 1
            if step == steps:
                return
        if epoch == 0:
            if step == 0:
                raise DagError("no training batches: the batch iterable is empty")
            log(f"batch iterator exhausted after {step} of {steps} steps")
            return


def _sample_valid_pixels(
    depth: Tensor, count: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``count`` flat pixel indices per image drawn uniformly among valid pixels, and their mask."""
    valid = DepthNorm.valid(depth).flatten(1)
    weights = valid.float().cpu()
    weights[weights.sum(1) == 0] = 1.0  # no label at all: draw anyway, the mask zeroes the loss
    pixels = torch.multinomial(weights, count, replacement=True, generator=generator)
    pixels = pixels.to(depth.device)
    return pixels, valid.gather(1, pixels)


def fit_pixel_heads(
    unet: UNet2DModel,
    scheduler: Any,
    batches: Batches,
    heads: Mapping[str, tuple[Sequence[int], DepthHead]],
    config: HeadConfig,
    norm: DepthNorm,
    *,
    timestep: int | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, float]]:
    """Train several heads at once on one frozen-U-Net forward per batch.

    ``heads`` maps a name to (decoder layers it reads, head). Each step draws t ~ U[0, t_max or T)
    (or uses ``timestep``), noises the batch with ``scheduler.add_noise``, extracts features under
    ``no_grad``, and minimises the masked L1 error in normalised depth at ``pixels_per_image``
    valid pixels per image; Adam with cosine learning-rate decay over ``config.steps``. Returns
    one row {"step", "loss_<name>", ...} per step.
    """
    num_t = int(scheduler.config.num_train_timesteps)
    t_high = min(config.t_max or num_t, num_t)
    if timestep is not None and not 0 <= timestep < num_t:
        raise DagError(f"timestep {timestep} out of range 0..{num_t - 1}")
    blocks = sorted({k for layer_blocks, _ in heads.values() for k in layer_blocks})
    device = unet.device
    generator = torch.Generator().manual_seed(config.seed)
    params = [p for _, head in heads.values() for p in head.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    # cosine decay to 0 over the run: the last steps average out the noise of t ~ U[0, t_max)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    for _, head in heads.values():
        head.to(device).train()
    was_training = unet.training
    unet.eval()
    rows: list[dict[str, float]] = []
    every = max(1, config.steps // 10)
    try:
        with FeatureExtractor(unet, blocks) as extractor:
            for step, (images, depth) in enumerate(_batch_stream(batches, config.steps, log)):
                images = images.to(device=device, dtype=unet.dtype)
                depth = depth.to(device=device, dtype=torch.float32)
                if depth.ndim != 4 or depth.shape[1] != 1 or depth.shape[-1] != depth.shape[-2]:
                    raise DagError(f"depth batch must be (B, 1, R, R), got {tuple(depth.shape)}")
                b, size = images.shape[0], depth.shape[-1]
                if timestep is None:
                    t = torch.randint(0, t_high, (b,), generator=generator)
                else:
                    t = torch.full((b,), timestep, dtype=torch.long)
                t = t.to(device)
                with torch.no_grad():
                    _, features = extractor(noise_images(scheduler, images, t, generator), t)
                by_block = dict(zip(blocks, features, strict=True))
                pixels, mask = _sample_valid_pixels(depth, config.pixels_per_image, generator)
                labels = depth.flatten(1).gather(1, pixels)
                target = norm.normalize(torch.where(mask, labels, norm.max_depth))
                weight = mask.float()
                losses: dict[str, Tensor] = {}
                inputs: dict[tuple[tuple[int, ...], torch.dtype], Tensor] = {}  # ensemble: once
                for name, (layer_blocks, head) in heads.items():
                    dtype = head.out.weight.dtype
                    key = (tuple(layer_blocks), dtype)
                    if key not in inputs:
                        inputs[key] = sample_pixels(
                            [by_block[k].to(dtype) for k in layer_blocks], pixels, size
                        )
                    pred = head(inputs[key], t)[:, 0, :, 0]
                    losses[name] = ((pred - target).abs() * weight).sum() / weight.sum().clamp(
                        min=1
                    )
                optimizer.zero_grad(set_to_none=True)
                torch.stack(list(losses.values())).sum().backward()
                optimizer.step()
                schedule.step()
                row: dict[str, float] = {"step": step}
                row.update({f"loss_{name}": loss.item() for name, loss in losses.items()})
                rows.append(row)
                if step % every == 0 or step == config.steps - 1:
                    log(" ".join(f"{k}={v:.4g}" for k, v in row.items()))
    finally:
        unet.train(was_training)
        for _, head in heads.values():
            head.eval()
    return rows


def _first_depth_size(stream: Iterator[Batch]) -> tuple[int, Iterator[Batch]]:
    try:
        first = next(stream)
    except StopIteration:
        raise DagError("no training batches") from None
    return int(first[1].shape[-1]), itertools.chain([first], stream)


def train_heads(
    unet: UNet2DModel,
    scheduler: Any,
    batches: Batches,
    config: HeadConfig,
    norm: DepthNorm,
    *,
    base_hash: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[DepthHeads, list[dict[str, float]]]:
    """Train MLP-S and MLP-W together on a frozen U-Net; deterministic in ``config.seed``.

    ``batches``: an iterable of, or a ``step -> `` callable returning, (images in [-1, 1]
    (B, 3, H, W) at the U-Net's resolution, depth in metres (B, 1, R, R); 0/NaN = no label).
    The heads output R×R maps. Returns the heads (eval mode, on the U-Net's device) and the
    per-step log rows {"step", "loss_s", "loss_w"}.

    With ``config.ensemble`` = K > 1 the K strong members are trained side by side with the weak
    head, each on its own L1 loss, on the same U-Net forward, noise, t and pixels per step (so
    member 0 follows the same path as the single head of K = 1); the rows hold
    "loss_s0" … "loss_s{K-1}" and "loss_w".
    """
    layers = decoder_layers(unet)
    check_blocks(layers, (*config.strong_blocks, *config.weak_blocks))
    resolution, stream = _first_depth_size(_batch_stream(batches, config.steps, log))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        heads = DepthHeads(
            config,
            norm,
            {k: layers[k].channels for k in (*config.strong_blocks, *config.weak_blocks)},
            resolution,
            base_hash=base_hash,
            num_train_timesteps=int(scheduler.config.num_train_timesteps),
        )
    members = heads.strong_members
    named = {"s": members[0]} if len(members) == 1 else {f"s{k}": m for k, m in enumerate(members)}
    trained: dict[str, tuple[Sequence[int], DepthHead]] = {
        name: (config.strong_blocks, head) for name, head in named.items()
    }
    trained["w"] = (config.weak_blocks, heads.weak)
    rows = fit_pixel_heads(unet, scheduler, stream, trained, config, norm, log=log)
    return heads.eval(), rows


def predict_depth(
    unet: UNet2DModel, heads: DepthHeads, x_t: Tensor, t: Tensor | int
) -> tuple[Tensor, Tensor, Tensor]:
    """(ε_θ(x_t, t), d^S_t, d^W_t) from one U-Net forward; differentiable w.r.t. ``x_t``."""
    with FeatureExtractor(unet, heads.blocks) as extractor:
        eps, features = extractor(x_t, t)
    d_strong, d_weak = heads(features, t)
    return eps, d_strong, d_weak
