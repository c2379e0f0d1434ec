"""Value types several settings classes share (torch-free)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

#: the depth encodings of :data:`dag_core.shards.DEPTH_DTYPES` (a test keeps them equal)
DEPTH_DTYPES = ("float16", "float32", "uint16mm")
DepthDtype = Literal["float16", "float32", "uint16mm"]
#: a run's seed (numpy's SeedSequence takes it with the sample index)
Seed = Annotated[int, Field(ge=0, lt=2**32)]
