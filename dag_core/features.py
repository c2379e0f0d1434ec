"""Decoder features f_t(k) of a frozen diffusers U-Net (paper, "Label-efficient training of depth
predictors").

DAG reads the intermediate activations of the pretrained denoiser's decoder at timestep t and
feeds the upsampled concatenation g_t = [f_t(k)]_{k∈S} to a pixel-wise depth MLP. The paper uses
guided-diffusion's ``output_blocks`` numbering (strong branch S = {2, 4, 5, 6, 7}, weak branch
W = {6}), as does ddpm-segmentation. Mapped onto diffusers' ``UNet2DModel``:

* "decoder layer k" is the k-th resnet of the decoder, counting 0-based across
  ``unet.up_blocks`` in order (``up_blocks[i].resnets[j]``);
* its output f_t(k) is taken after the attention that follows that resnet when the up block has
  attentions (``up_blocks[i].attentions[j]``), and after the block's upsampler when the resnet is
  the last of its block (``up_blocks[i].upsamplers[-1]``) — exactly the extent of one
  guided-diffusion ``output_block`` (ResBlock [+ AttentionBlock] [+ Upsample]).

For the google/ddpm-church-256 / ddpm-bedroom-256 layout (:data:`dag_core.unet_configs.
CHURCH_256_CONFIG`) this gives 18 layers::

    k   module                       channels  resolution (256² input)
    0   up_blocks.0.resnets.0        512         8²
    1   up_blocks.0.resnets.1        512         8²
    2   up_blocks.0.upsamplers.0     512        16²
    3   up_blocks.1.attentions.0     512        16²
    4   up_blocks.1.attentions.1     512        16²
    5   up_blocks.1.upsamplers.0     512        32²
    6   up_blocks.2.resnets.0        256        32²
    7   up_blocks.2.resnets.1        256        32²
    8   up_blocks.2.upsamplers.0     256        64²
    9   up_blocks.3.resnets.0        256        64²
    10  up_blocks.3.resnets.1        256        64²
    11  up_blocks.3.upsamplers.0     256       128²
    12  up_blocks.4.resnets.0        128       128²
    13  up_blocks.4.resnets.1        128       128²
    14  up_blocks.4.upsamplers.0     128       256²
    15  up_blocks.5.resnets.0        128       256²
    16  up_blocks.5.resnets.1        128       256²
    17  up_blocks.5.resnets.2        128       256²

Run ``python -m dag_core.features --describe MODEL`` for the table of any U-Net.
Features are captured with forward hooks during ONE ordinary U-Net forward, with the autograd
graph kept, so guidance can differentiate a depth head's output with respect to x_t.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor, nn

from dag_core.errors import DagError
from dag_core.unet_configs import CHURCH_256_CONFIG


@dataclass(frozen=True)
class DecoderLayer:
    """One decoder layer: its index k, the hooked module, channels and downsampling factor."""

    index: int
    module_name: str
    channels: int
    scale: int


def decoder_layers(unet: UNet2DModel) -> list[DecoderLayer]:
    """All decoder layers of ``unet`` in guided-diffusion ``output_blocks`` order (see module doc).

    The scale is derived from the architecture alone (number of encoder downsamplers, then one
    halving per decoder upsampler), so it also works for a U-Net built on the ``meta`` device.
    """
    scale = 2 ** sum(getattr(block, "downsamplers", None) is not None for block in unet.down_blocks)
    layers: list[DecoderLayer] = []
    for i, block in enumerate(unet.up_blocks):
        attentions = getattr(block, "attentions", None)
        upsamplers = getattr(block, "upsamplers", None)
        n = len(block.resnets)
        for j, resnet in enumerate(block.resnets):
            if j == n - 1 and upsamplers is not None:
                name, layer_scale = f"up_blocks.{i}.upsamplers.{len(upsamplers) - 1}", scale // 2
            elif attentions is not None and j < len(attentions):
                name, layer_scale = f"up_blocks.{i}.attentions.{j}", scale
            else:
                name, layer_scale = f"up_blocks.{i}.resnets.{j}", scale
            layers.append(DecoderLayer(len(layers), name, int(resnet.out_channels), layer_scale))
        if upsamplers is not None:
            scale //= 2
    return layers


def check_blocks(layers: Sequence[DecoderLayer], blocks: Sequence[int]) -> None:
    """Raise :class:`DagError` when a requested decoder layer index does not exist."""
    for k in blocks:
        if not 0 <= int(k) < len(layers):
            raise DagError(f"decoder layer {k} out of range 0..{len(layers) - 1} for this U-Net")


def describe(unet: UNet2DModel) -> str:
    """A text table of the decoder layers: k, hooked module, channels, resolution at sample_size."""
    size = unet.config.sample_size
    size = size if isinstance(size, int) else int(size[0])
    rows = [f"{'k':>3}  {'module':<28} {'channels':>8}  resolution"]
    for layer in decoder_layers(unet):
        side = size // layer.scale
        rows.append(f"{layer.index:>3}  {layer.module_name:<28} {layer.channels:>8}  {side}x{side}")
    return "\n".join(rows)


class _StopForward(Exception):
    """Raised by the last requested layer's hook to end a features-only forward."""


class FeatureExtractor:
    """Forward hooks that capture the decoder features f_t(k), k ∈ ``blocks``.

    ``extractor(x_t, t)`` runs the U-Net once and returns ``(ε_θ(x_t, t), [f_t(k) for k in
    blocks])``. Nothing is detached: run it under ``torch.no_grad()`` to train heads, with grad
    enabled to guide. :meth:`features` returns the features alone and stops the forward at the
    last requested layer (training and evaluating heads need no ε; at S = {2,4,5,6,7} that skips
    the decoder's 8²–32² layers). Use as a context manager (or call :meth:`close`) to remove the
    hooks.
    """

    def __init__(self, unet: UNet2DModel, blocks: Sequence[int]) -> None:
        layers = decoder_layers(unet)
        self.blocks: tuple[int, ...] = tuple(int(k) for k in blocks)
        if not self.blocks:
            raise DagError("no decoder layers requested for feature extraction")
        check_blocks(layers, self.blocks)
        self.unet = unet
        self._store: dict[int, Tensor] = {}
        self._last = max(self.blocks)
        self._stop = False
        modules = dict(unet.named_modules())
        self._handles = [
            modules[layers[k].module_name].register_forward_hook(self._hook(k))
            for k in sorted(set(self.blocks))
        ]

    def _hook(self, k: int) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            self._store[k] = output
            if self._stop and k == self._last:
                raise _StopForward

        return hook

    def __call__(self, x_t: Tensor, t: Tensor | int) -> tuple[Tensor, list[Tensor]]:
        """One U-Net forward: (ε prediction, decoder features in the order of ``blocks``)."""
        eps, features = self._forward(x_t, t, stop=False)
        assert eps is not None  # a full forward always reaches the output
        return eps, features

    def features(self, x_t: Tensor, t: Tensor | int) -> list[Tensor]:
        """The decoder features in the order of ``blocks``, from a U-Net forward that stops after
        the last of them (the same tensors as :meth:`__call__`'s, without computing ε)."""
        return self._forward(x_t, t, stop=True)[1]

    def _forward(
        self, x_t: Tensor, t: Tensor | int, *, stop: bool
    ) -> tuple[Tensor | None, list[Tensor]]:
        """(ε, or None when ``stop`` ended the forward at the last requested layer; features)."""
        if not self._handles:
            raise DagError("feature extractor is closed")
        self._store.clear()
        self._stop = stop
        try:
            try:
                eps: Tensor | None = self.unet(x_t, t).sample
            except _StopForward:
                eps = None
            return eps, [self._store[k] for k in self.blocks]
        finally:
            self._stop = False
            self._store.clear()

    def close(self) -> None:
        """Remove the hooks; the U-Net behaves exactly as before."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> FeatureExtractor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def upsample_concat(features: Sequence[Tensor], size: int | tuple[int, int]) -> Tensor:
    """g_t = [f_t(k)]_k: bilinear resize (align_corners=False) to ``size``, concat on channels."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    maps = [
        f
        if tuple(f.shape[-2:]) == hw
        else F.interpolate(f, hw, mode="bilinear", align_corners=False)
        for f in features
    ]
    return torch.cat(maps, dim=1)


def sample_pixels(
    features: Sequence[Tensor], pixels: Tensor, size: int | tuple[int, int]
) -> Tensor:
    """``upsample_concat(features, size)`` evaluated only at ``pixels`` → (B, C, P, 1).

    ``pixels`` (B, P) holds flat indices ``row * width + col`` into the ``size`` grid. Bilinear
    sampling at those pixel centres with border clamping is exactly what ``F.interpolate``
    (align_corners=False) computes there, without materialising the full-resolution map — this
    bounds the memory of head training.
    """
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    rows = torch.div(pixels, w, rounding_mode="floor")
    cols = pixels - rows * w
    grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], dim=-1)
    grid = grid.unsqueeze(2)  # (B, P, 1, 2), (x, y) order
    maps = [
        F.grid_sample(
            f, grid.to(f.dtype), mode="bilinear", padding_mode="border", align_corners=False
        )
        for f in features
    ]
    return torch.cat(maps, dim=1)


def noise_images(
    scheduler: Any, x0: Tensor, t: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Draw x_t ~ q(x_t | x_0) with the base model's own scheduler (``scheduler.add_noise``)."""
    noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return scheduler.add_noise(x0, noise, t.to(x0.device))


def unet_skeleton(model: str | Path) -> UNet2DModel:
    """A U-Net with ``model``'s architecture on the ``meta`` device (no weights are loaded).

    ``model`` is ``church-256`` or a local diffusers folder: a pipeline (``unet/config.json``) or
    a bare U-Net (``config.json``).
    """
    if str(model) == "church-256":
        config = dict(CHURCH_256_CONFIG)
    else:
        root = Path(model)
        path = next(
            (p for p in (root / "unet" / "config.json", root / "config.json") if p.is_file()), None
        )
        if path is None:
            raise DagError(f"no diffusers U-Net config (unet/config.json or config.json) in {root}")
        try:
            config = UNet2DModel.load_config(path.parent)
            with torch.device("meta"):
                return UNet2DModel.from_config(config)
        except (OSError, ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
            raise DagError(f"cannot build a UNet2DModel from {path}: {exc}") from exc
    with torch.device("meta"):
        return UNet2DModel(**config)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m dag_core.features --describe MODEL``."""
    parser = argparse.ArgumentParser(
        prog="python -m dag_core.features", description="Decoder layers of a diffusers U-Net."
    )
    parser.add_argument(
        "--describe",
        metavar="MODEL",
        required=True,
        help="local diffusers pipeline/unet folder, or 'church-256'",
    )
    args = parser.parse_args(argv)
    try:
        print(describe(unet_skeleton(args.describe)))
    except DagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
