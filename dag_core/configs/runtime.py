"""Settings of where and how a stage computes (:class:`RuntimeSettings`), without torch.

The ``runtime`` params group; :class:`dag_core.runtime.RuntimeConfig` adds what needs torch
(device resolution, autocast, compilation). The defaults are exactly the fp32 behaviour, the
``runtime`` group of params.yaml (a test compares them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from dag_core.validation import Checked

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def _device(value: str) -> str:
    if not _DEVICE.match(value):
        raise ValueError("must be auto, cpu, cuda or cuda:N")
    return value


@dataclass(frozen=True)
class RuntimeSettings(Checked):
    """The ``runtime`` params group (see :mod:`dag_core.runtime`). Frozen and hashable.

    Args:
        device: ``auto`` (the GPU when one is visible), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, or ``bf16`` autocast in training and sampling.
        compile: Regional ``torch.compile`` of the U-Net's blocks.
        deterministic: Matrix-form resizes and deterministic kernels (same bytes on one GPU).
        channels_last: channels_last memory format for the U-Net.
        head_resolution: Guidance evaluates the depth heads at r² (None: their trained size).
        guidance_chunk: Micro-batch size of the guided step (None: the whole batch).
    """

    key = "runtime"

    device: Annotated[str, AfterValidator(_device)] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    deterministic: bool = False
    channels_last: bool = False
    head_resolution: Annotated[int, Field(ge=1)] | None = None
    guidance_chunk: Annotated[int, Field(ge=1)] | None = None
