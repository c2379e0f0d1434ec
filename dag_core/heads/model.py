"""The depth heads MLP-S / MLP-W as a model: build, evaluate, save, load, check compatibility.

Each head is a pixel-wise MLP d_t = MLP(g_t, t) on g_t = [f_t(k)]_{k∈blocks}, the decoder features
of the frozen diffusion U-Net (:mod:`dag_core.features`) bilinearly upsampled to the depth map size.
The strong branch MLP-S reads many layers (S = {2, 4, 5, 6, 7}), the weak branch MLP-W a single one
(W = {6}); their disagreement drives depth consistency guidance (paper Eq. 6). Both predict depth in
the normalised space of :class:`dag_core.depthnorm.DepthNorm` and are conditioned on t, because
guidance queries them at every denoising step. Training is :mod:`dag_core.heads.training`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from diffusers import UNet2DModel
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn

from dag_core.atomic import write_bytes_atomic, write_text_atomic
from dag_core.checkpoint import load_weights, model_files, read_meta
from dag_core.configs.heads import HeadConfig
from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.features import FeatureExtractor, decoder_layers, upsample_concat

WEIGHTS_FILE = "heads.safetensors"
META_FILE = "heads.json"
FORMAT_VERSION = 1

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
        # bytes first, then a Python write: an error is an OSError naming the file
        write_bytes_atomic(directory / WEIGHTS_FILE, safetensors.torch.save(state))
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
        meta_path, weights_path = model_files(directory, META_FILE, WEIGHTS_FILE, "depth-head")
        heads = read_meta(
            meta_path,
            "depth-head",
            lambda meta: cls(
                HeadConfig.from_dict(meta["config"]),
                DepthNorm.from_dict(meta["norm"]),
                {int(k): int(v) for k, v in meta["layer_channels"].items()},
                int(meta["resolution"]),
                base_hash=meta.get("base_hash"),
                num_train_timesteps=int(meta.get("num_train_timesteps", 1000)),
            ),
        )
        load_weights(heads, weights_path, "depth-head")
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


def predict_depth(
    unet: UNet2DModel, heads: DepthHeads, x_t: Tensor, t: Tensor | int
) -> tuple[Tensor, Tensor, Tensor]:
    """(ε_θ(x_t, t), d^S_t, d^W_t) from one U-Net forward; differentiable w.r.t. ``x_t``."""
    with FeatureExtractor(unet, heads.blocks) as extractor:
        eps, features = extractor(x_t, t)
    d_strong, d_weak = heads(features, t)
    return eps, d_strong, d_weak
