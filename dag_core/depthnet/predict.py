"""Depth in metres from a :class:`~dag_core.depthnet.model.DepthNet` for uint8 images."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dag_core.depthnet.model import DepthNet
from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError


def inference_size(height: int, width: int, resolution: int, stride: int) -> tuple[int, int]:
    """Network input size: short side ``resolution``, aspect kept, both sides multiples of
    ``stride`` (rounded to the nearest, at least ``stride``)."""
    scale = resolution / min(height, width)
    return tuple(max(stride, round(s * scale / stride) * stride) for s in (height, width))


def predict_depth(model: DepthNet, rgb: np.ndarray, norm: DepthNorm, resolution: int) -> np.ndarray:
    """Metric depth (H, W) or (B, H, W) float32 for uint8 images (H, W, 3) or (B, H, W, 3).

    The image is resized to :func:`inference_size` (short side ``resolution``), the network's
    normalised prediction is resized bilinearly back to the input size, then mapped to metres.
    """
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise DagError(f"rgb must be uint8 (H, W, 3) or (B, H, W, 3), got {arr.dtype} {arr.shape}")
    batch = arr if arr.ndim == 4 else arr[None]
    h, w = batch.shape[1:3]
    device = next(model.parameters()).device
    image = torch.from_numpy(batch.copy()).to(device).permute(0, 3, 1, 2)
    image = image.float() / 127.5 - 1.0
    size = inference_size(h, w, resolution, model.stride)
    image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = model(image)
    model.train(was_training)
    pred = F.interpolate(pred, size=(h, w), mode="bilinear", align_corners=False)
    depth = norm.denormalize(pred)[:, 0].float().cpu().numpy()
    return depth if arr.ndim == 4 else depth[0]
