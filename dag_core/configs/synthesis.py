"""What determines the bytes of a synthetic dataset (:class:`SynthesisSpec`), without torch.

:mod:`dag_core.synthesis` renders the shards a spec describes. The defaults of the sampling
settings are the embedded default's ``synthesize`` group of params.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

from dag_core.configs.guidance import GuidanceConfig
from dag_core.configs.types import DepthDtype, Seed
from dag_core.errors import ParamError
from dag_core.validation import Checked

SPEC_NAME = "_spec.json"
#: the samplers of :data:`dag_core.sampling.SAMPLERS` (a test keeps them equal)
SAMPLER_NAMES = ("ddpm", "ddim")
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

PositiveInt = Annotated[int, Field(ge=1)]
#: DDIM's stochasticity η
Eta = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Sampler = Literal["ddpm", "ddim"]


def guidance_config(
    variant: str, settings: Mapping[str, Any], key: str | None = None
) -> GuidanceConfig:
    """A variant's :class:`GuidanceConfig` from its settings (one-line error naming a bad one
    under ``key``, default ``variants.<variant>``)."""
    return GuidanceConfig.from_params(settings, key or f"variants.{variant}")


@dataclass(frozen=True)
class SynthesisSpec(Checked):
    """Everything that determines the bytes of a synthetic dataset (stored as ``_spec.json``).

    Every value that a sampler, scheduler or numpy would reject later is checked here, so a bad
    spec fails before any output is touched (the steps' upper bound needs the model's scheduler:
    :func:`dag_core.synthesis.check_spec_fits`).

    Args:
        num_samples: Samples per variant (the same seeds in every variant).
        shard_size: Samples per shard.
        seed: The run's seed; sample i uses ``sample_seed(seed, i)``.
        sampler: ``ddim`` or ``ddpm``.
        steps: Sampler steps.
        eta: DDIM's η (0: deterministic DDIM); ddim only.
        depth_dtype: How depth is stored in the shards.
        variants: Name → guidance settings of each variant (:class:`GuidanceConfig` fields).
        hashes: Hashes of the base model, heads and prior.
        runtime: The runtime settings that can change bytes
            (:meth:`dag_core.runtime.RuntimeConfig.result_record`).
    """

    key = "SynthesisSpec"

    num_samples: PositiveInt
    shard_size: PositiveInt
    seed: Seed = 0
    sampler: Sampler = "ddim"
    steps: PositiveInt = 20
    eta: Eta = 0.0
    depth_dtype: DepthDtype = "float16"
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.eta != 0.0 and self.sampler != "ddim":
            raise self._fail("eta", f"only applies to the ddim sampler, not {self.sampler!r}")
        if not self.variants:
            raise self._fail("variants", "no variants given (expected e.g. unguided and dag)")
        for name, settings in self.variants.items():
            if not VARIANT_NAME.match(name):
                raise ParamError(
                    f"{self.key}.variants",
                    name,
                    "a variant name must be a plain folder name "
                    "([A-Za-z0-9_-], not starting with - or _)",
                )
            guidance_config(name, settings, f"{self.key}.variants.{name}")

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)

    def shard_indices(self, shard: int) -> range:
        """Sample indices held by shard ``shard``."""
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_samples))

    def variant_spec(self, variant: str) -> dict[str, Any]:
        """The JSON record that identifies one variant's dataset (compared on resume)."""
        data = asdict(self)
        data["variants"] = {variant: self.variants[variant]}
        return data
