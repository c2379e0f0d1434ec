"""The downstream depth network: a small conv–GroupNorm–SiLU U-Net (:class:`DepthNet`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dag_core.errors import DagError


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide ``channels``."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ConvBlock(nn.Sequential):
    """Two (3×3 conv → GroupNorm → SiLU) layers."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            _group_norm(out_channels),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            _group_norm(out_channels),
            nn.SiLU(),
        )


class DepthNet(nn.Module):
    """Encoder–decoder U-Net: RGB in [-1, 1] (B, 3, H, W) → normalised depth (B, 1, H, W).

    Level ``i`` runs a :class:`ConvBlock` at ``channels[i]`` width and 1/2^i resolution (2×2
    average-pool between levels); the decoder upsamples bilinearly, concatenates the encoder skip
    of the same level and runs a :class:`ConvBlock`; a 1×1 conv gives one channel of depth in the
    space of :class:`~dag_core.depthnorm.DepthNorm`. Inputs whose sides are not multiples of
    :attr:`stride` are reflect-padded and the output cropped back.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128)) -> None:
        super().__init__()
        widths = [int(c) for c in channels]
        if not widths or any(c < 1 for c in widths):
            raise DagError(f"channels must be one or more positive widths, got {tuple(channels)}")
        self.stride = 2 ** (len(widths) - 1)
        self.encoder = nn.ModuleList(
            ConvBlock(c_in, c_out) for c_in, c_out in zip([3, *widths[:-1]], widths, strict=True)
        )
        self.decoder = nn.ModuleList(
            ConvBlock(widths[i + 1] + widths[i], widths[i])
            for i in reversed(range(len(widths) - 1))
        )
        self.out = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised depth for images ``x`` (B, 3, H, W) in [-1, 1], any H, W ≥ 1."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise DagError(f"DepthNet expects images (B, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.stride, -w % self.stride
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.avg_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.out(x)[..., :h, :w]


def seeded_depth_net(channels: Sequence[int], seed: int) -> DepthNet:
    """A :class:`DepthNet` (CPU) initialised from a private generator seeded ``seed``.

    The weights equal torch's default initialisation after ``torch.manual_seed(seed)`` (the
    same draws in the same order), but the global RNG is neither read nor changed, so nets built
    in parallel threads get the same weights as one at a time.
    """
    with torch.device("meta"):
        model = DepthNet(channels)
    model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):  # nn.Conv2d.reset_parameters with a generator
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        elif isinstance(module, nn.GroupNorm):
            module.reset_parameters()
        elif any(True for _ in module.parameters(recurse=False)):
            raise DagError(f"seeded_depth_net cannot initialise {type(module).__name__}")
    return model
