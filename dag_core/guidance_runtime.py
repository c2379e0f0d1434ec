"""Depth guidance (DAG paper, "Depth guided sampling") with the runtime's speed/memory levers.

:class:`RuntimeGuidance` is :class:`~dag_core.guidance.DepthGuidance` — the same DCG/DPG losses
and update — evaluated under a :class:`~dag_core.runtime.RuntimeConfig`:

* ``precision: bf16`` — the whole guided step (U-Net, heads, prior, backward) under autocast;
* ``head_resolution: r`` — MLP-S / MLP-W read the decoder features upsampled to r² instead of the
  heads' trained resolution R² (the heads are pixel-wise, so this evaluates the same function on
  a coarser pixel grid); L_dc is the per-pixel mean on that grid, d^S_t goes to the prior from
  r², and the returned d^S_t is upsampled (bilinear) back to R². An approximation: optional,
  off by default, and checked against the heads' accuracy by ``bench/bench_gpu.py``;
* ``guidance_chunk: c`` — the step runs on micro-batches of c samples (per-sample losses, eval
  heads: each sample's shift is the same); bounds activation memory;
* ``deterministic`` — every bilinear resize inside the differentiated graph is a fixed matrix
  product (:func:`~dag_core.resize.matrix_resize`), whose CUDA backward is deterministic.

With the default runtime it is bit for bit the plain :class:`DepthGuidance`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dag_core.errors import DagError
from dag_core.features import upsample_concat
from dag_core.guidance import DepthGuidance, GuidanceConfig, GuidedStep
from dag_core.heads import DepthHeads
from dag_core.prior import DepthPrior
from dag_core.resize import make_resize, upsample_concat_matrix
from dag_core.runtime import RuntimeConfig


class RuntimeGuidance(DepthGuidance):
    """:class:`DepthGuidance` under a :class:`RuntimeConfig` (see module doc)."""

    def __init__(
        self,
        unet: nn.Module,
        heads: DepthHeads,
        prior: DepthPrior | None,
        config: GuidanceConfig,
        runtime: RuntimeConfig | None = None,
    ) -> None:
        super().__init__(unet, heads, prior, config)
        self.runtime = runtime or RuntimeConfig()
        res = self.runtime.head_resolution
        if res is not None and res > heads.resolution:
            raise DagError(
                f"runtime.head_resolution {res} exceeds the heads' resolution {heads.resolution}"
            )
        self.head_resolution = int(res or heads.resolution)
        if self.runtime.deterministic or self.runtime.precision != "fp32":
            resize = make_resize(self.runtime.deterministic)
            self.prior_resize = lambda d, r: resize(d.float(), r)

    def eval_heads(self, features: list[Tensor], t: Tensor) -> tuple[Tensor, Tensor]:
        """(d^S_t, d^W_t) at ``head_resolution``, with deterministic resizes when asked; the
        depth maps (and so the losses) are float32 under bf16 autocast too."""
        up = upsample_concat_matrix if self.runtime.deterministic else upsample_concat
        d_s, d_w = self.heads(features, t, resolution=self.head_resolution, upsample=up)
        return d_s.float(), d_w.float()

    def __call__(
        self,
        x_t: Tensor,
        t: int | Tensor,
        generator: list[torch.Generator] | None = None,
    ) -> GuidedStep:
        batch = x_t.shape[0]
        chunk = self.runtime.guidance_chunk or batch
        t = torch.as_tensor(t, device=x_t.device)
        with self.runtime.autocast(x_t.device):
            steps = []
            for start in range(0, batch, chunk):
                part = slice(start, start + chunk)
                steps.append(
                    super().__call__(
                        x_t[part],
                        t if t.ndim == 0 else t[part],
                        None if generator is None else generator[part],
                    )
                )
        step = steps[0] if len(steps) == 1 else _concat(steps)
        return self._finish(step, x_t.dtype)

    def _finish(self, step: GuidedStep, dtype: torch.dtype) -> GuidedStep:
        depth = step.depth_strong.float()
        size = self.heads.resolution
        if depth.shape[-1] != size:
            depth = F.interpolate(depth, size=(size, size), mode="bilinear", align_corners=False)
        return GuidedStep(
            eps=step.eps.to(dtype),
            grad=None if step.grad is None else step.grad.to(dtype),
            losses={k: v.float() for k, v in step.losses.items()},
            depth_strong=depth,
        )


def _concat(steps: list[GuidedStep]) -> GuidedStep:
    shifts = [s.grad for s in steps]
    return GuidedStep(
        eps=torch.cat([s.eps for s in steps]),
        grad=None if shifts[0] is None else torch.cat(shifts),  # type: ignore[arg-type]
        losses={k: torch.cat([s.losses[k] for s in steps]) for k in steps[0].losses},
        depth_strong=torch.cat([s.depth_strong for s in steps]),
    )
