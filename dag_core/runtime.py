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

Determinism on CUDA: ``deterministic: true`` uses the matrix-form bilinear resizes of
:mod:`dag_core.resize` for the heads' feature upsampling and the prior's input (the backward of
``F.interpolate(mode="bilinear")`` has no deterministic CUDA kernel), turns off cuDNN autotuning,
selects deterministic cuDNN kernels and the math attention kernel.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

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
