"""Where and how the pipeline's tensors are computed: device, precision, compilation, determinism.

One :class:`RuntimeConfig` (the ``runtime`` group of params.yaml, a YAML anchor read by every
stage) says on which device a stage trains or samples and which speed levers it may pull. The
defaults (``device: auto``, ``precision: fp32``, nothing compiled, no deterministic kernels, heads
at their trained resolution, no micro-batching) are exactly the behaviour before this module
existed; every lever is opt-in.

Result-changing levers (documented approximations of the paper's method, DAG §4):

* ``precision: bf16`` — ``torch.autocast`` around the U-Net / heads / prior forward and backward;
* ``head_resolution`` — the depth heads are evaluated on features upsampled to a smaller grid
  (e.g. 64² for 256² heads); L_dc is the per-pixel mean at that grid (the same quantity, coarser
  sampling), and d^S_t is resized to the prior's resolution for L_dp as before. The heads are
  pixel-wise MLPs, so this evaluates the same function at fewer pixels;
* ``deterministic`` — resizes by fixed matrices instead of ``F.interpolate`` (see below).

Result-preserving levers: ``guidance_chunk`` (micro-batches of the guided step: every loss is a
per-sample sum and the heads are in eval mode, so each sample's gradient is unchanged — it bounds
activation memory), ``channels_last`` and ``compile`` (regional ``torch.compile`` of the U-Net's
resnet/attention/resampling blocks, so the feature hooks stay outside the compiled regions).

Determinism on CUDA: the backward of ``F.interpolate(mode="bilinear")`` (with or without
antialias) accumulates with atomics on CUDA and has no deterministic kernel — it is what made DAG
shards differ run to run. A bilinear resize is linear and separable, so it equals ``Mh^T · X · Mw``
for two fixed matrices built once from ``F.interpolate`` itself on the identity
(:func:`resize_matrix`); matrix products and their gradients are deterministic in cuBLAS for a
fixed GPU model, library version and batch size. ``deterministic: true`` uses these matrix
resizes for the heads' feature upsampling and the prior's input, turns off cuDNN autotuning,
selects deterministic cuDNN kernels and the math attention kernel.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dag_core.errors import DagError

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
#: settings that can change the bytes of generated samples (recorded in synthesis specs); compiled
#: and channels_last kernels may round differently on a GPU, so they count too
RESULT_KEYS = ("precision", "deterministic", "head_resolution", "compile", "channels_last")


@dataclass(frozen=True)
class RuntimeConfig:
    """The ``runtime`` params group (see module doc). Frozen and hashable (used as a cache key)."""

    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    deterministic: bool = False
    channels_last: bool = False
    head_resolution: int | None = None
    guidance_chunk: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise DagError(f"runtime.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise DagError(
                f"runtime.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        for name in ("compile", "deterministic", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise DagError(f"runtime.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("head_resolution", "guidance_chunk"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise DagError(f"runtime.{name} must be null or an int >= 1, got {value!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | RuntimeConfig | None) -> RuntimeConfig:
        """Build from a params.yaml mapping (None = defaults); unknown keys are an error."""
        if isinstance(params, RuntimeConfig):
            return params
        if params is None:
            return cls()
        if not isinstance(params, Mapping):
            raise DagError(f"runtime must be a mapping, got {params!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise DagError(
                f"unknown runtime setting(s) {', '.join(unknown)}; expected some of "
                f"{', '.join(sorted(known))}"
            )
        return cls(**dict(params))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype (``torch.float32`` = no autocast)."""
        return PRECISIONS[self.precision]

    def resolve_device(self) -> torch.device:
        """The concrete device: ``auto`` → ``cuda`` when a GPU is visible, else ``cpu``.

        ``cuda`` / ``cuda:N`` without such a GPU is a :class:`DagError` (one ``error:`` line).
        """
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cpu":
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise DagError(
                f"runtime.device is {self.device!r} but no CUDA GPU is available "
                "(torch.cuda.is_available() is False); use device: auto or cpu"
            )
        device = torch.device(self.device)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DagError(
                f"runtime.device is {self.device!r} but only {torch.cuda.device_count()} CUDA "
                "GPU(s) are visible"
            )
        return device

    def result_record(self) -> dict[str, Any]:
        """What of this runtime can change generated bytes, for provenance and resume checks."""
        record = {k: getattr(self, k) for k in RESULT_KEYS}
        record["device_type"] = self.resolve_device().type
        return record

    def apply(self) -> torch.device:
        """Resolve the device and set the process-wide backend flags; returns the device.

        ``deterministic``: cuDNN deterministic kernels without autotuning, the math attention
        kernel, and ``CUBLAS_WORKSPACE_CONFIG`` pinned (when not set already).
        """
        device = self.resolve_device()
        if self.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            if device.type == "cuda":
                torch.backends.cuda.enable_flash_sdp(False)
                torch.backends.cuda.enable_mem_efficient_sdp(False)
                torch.backends.cuda.enable_math_sdp(True)
        return device

    def autocast(self, device: torch.device | str) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` in bf16 when ``precision: bf16``; a no-op context for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(torch.device(device).type, dtype=self.dtype)

    def prepare(self, module: nn.Module, device: torch.device | None = None) -> nn.Module:
        """Move ``module`` to the device; channels_last and regional compile when asked."""
        module.to(device if device is not None else self.resolve_device())
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        if self.compile:
            compile_regions(module)
        return module


def use_runtime(
    params: Mapping[str, Any] | RuntimeConfig | None,
) -> tuple[RuntimeConfig, torch.device]:
    """Validate ``params``, apply the backend flags; (config, device). Tasks call this."""
    config = RuntimeConfig.from_params(params)
    return config, config.apply()


# ---------------------------------------------------------------------------------------------
# Regional compilation
# ---------------------------------------------------------------------------------------------

_REGION_TYPES = ("ResnetBlock2D", "Attention", "Upsample2D", "Downsample2D")


def compile_regions(module: nn.Module, backend: str = "inductor") -> list[str]:
    """``torch.compile`` the ``forward`` of every resnet, attention and resampling block inside
    ``module`` (in place); returns their names.

    Compiling the blocks' ``forward`` (not the module call) keeps forward hooks — the decoder
    feature taps of :class:`~dag_core.features.FeatureExtractor` — outside the compiled graphs,
    so adding and removing them never triggers a recompilation.
    """
    names = []
    for name, sub in module.named_modules():
        if type(sub).__name__ in _REGION_TYPES and not getattr(sub, "_dag_compiled", False):
            sub.forward = torch.compile(sub.forward, backend=backend, dynamic=False)
            sub._dag_compiled = True
            names.append(name)
    return names


# ---------------------------------------------------------------------------------------------
# Deterministic resizes
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _matrix_cpu(n_in: int, n_out: int, antialias: bool) -> Tensor:
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, 1, 1, n_in)
    out = F.interpolate(
        eye, size=(1, n_out), mode="bilinear", align_corners=False, antialias=antialias
    )
    return out.reshape(n_in, n_out)


def resize_matrix(
    n_in: int, n_out: int, *, antialias: bool, device: torch.device | str, dtype: torch.dtype
) -> Tensor:
    """M (n_in, n_out) with ``x @ M`` = 1-D bilinear resize of the last axis of ``x``, exactly as
    ``F.interpolate(mode="bilinear", align_corners=False, antialias=antialias)`` weighs it."""
    return _matrix_cpu(int(n_in), int(n_out), bool(antialias)).to(device=device, dtype=dtype)


def matrix_resize(x: Tensor, size: int | Sequence[int], *, antialias: bool = False) -> Tensor:
    """Bilinear resize of (…, H, W) to ``size`` as two matrix products (deterministic backward).

    Equal (up to float rounding) to ``F.interpolate(x, size, mode="bilinear",
    align_corners=False, antialias=antialias)``.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == (h, w):
        return x
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    mh = resize_matrix(x.shape[-2], h, antialias=antialias, device=x.device, dtype=dtype)
    mw = resize_matrix(x.shape[-1], w, antialias=antialias, device=x.device, dtype=dtype)
    return torch.matmul(mh.T, torch.matmul(x.to(dtype), mw))


def upsample_concat_matrix(features: Sequence[Tensor], size: int) -> Tensor:
    """:func:`dag_core.features.upsample_concat` with :func:`matrix_resize` (deterministic)."""
    return torch.cat([matrix_resize(f, size) for f in features], dim=1)


def make_resize(deterministic: bool) -> Callable[[Tensor, int], Tensor]:
    """The antialiased bilinear resize used before the depth prior: ``F.interpolate`` (default)
    or its deterministic matrix form."""
    if deterministic:
        return lambda x, r: matrix_resize(x, r, antialias=True)
    return lambda x, r: F.interpolate(
        x, size=(r, r), mode="bilinear", align_corners=False, antialias=True
    )
