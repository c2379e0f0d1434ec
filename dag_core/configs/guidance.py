"""Settings of depth guidance (:class:`GuidanceConfig`), importable without torch.

The defaults are the embedded default's ``synthesize.guidance`` group of params.yaml (a test
compares them): ``paper`` scale mode with w_dc = 0.3 and w_dp = 0.5, τ drawn per step, guidance
while t/T ∈ [0, 0.6]. :mod:`dag_core.guidance` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator

from dag_core.errors import ParamError
from dag_core.validation import Checked, check_value

#: what a guidance scale means (:mod:`dag_core.strength`)
SCALE_MODES = ("mean", "paper")
#: how ∇L_dp is taken: through ε_φ as written, or score-distillation style
DPG_GRADIENTS = ("full", "sds")

#: a guidance scale: a finite number >= 0
Scale = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: a fraction of the noise schedule, t/T ∈ [0, 1]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
NonNegativeInt = Annotated[int, Field(ge=0)]
#: a positive finite number, or null (off)
PositiveOrNone = Annotated[float, Field(gt=0, allow_inf_nan=False)] | None


def _tau(value: Any) -> int | str:
    """``"random"`` or an int >= 0 (one message for both members of the union)."""
    if isinstance(value, str) and value == "random":
        return value
    try:
        return check_value(NonNegativeInt, value, "tau")
    except ParamError:
        raise ValueError("must be an int >= 0 or 'random'") from None


@dataclass
class GuidanceConfig(Checked):
    """Scales and schedule of depth guidance (DCG + DPG).

    Args:
        w_dc: Scale of depth consistency guidance (L_dc); 0 turns DCG off.
        w_dp: Scale of depth prior guidance (L_dp); 0 turns DPG off.
        tau: The prior's noise level for DPG: a fixed int, or ``"random"`` = drawn per step and
            per sample uniformly in [tau_min, tau_max] (inclusive; a moderate range where ε_φ
            sees the depth's structure but is not asked to denoise nearly clean maps).
        tau_min: Lower end of the random τ range.
        tau_max: Upper end of the random τ range.
        window: (lo, hi): guidance is applied only when t/T ∈ [lo, hi] (t/T ≈ 1 is pure noise).
        grad_clip: Bound on the per-sample L2 norm of the guidance gradient g (None: off).
        grad_norm: Rescale each term's gradient to unit per-pixel RMS before weighting, so w_k
            becomes the term's RMS step.
        dpg_gradient: ``full`` (∇L_dp as written) or ``sds`` (without the prior's Jacobian).
        grad_blur: Low-pass g with a Gaussian of that many pixels (None: off).
        nan_guard: Zero non-finite gradients per sample.
        scale_mode: What w means (:mod:`dag_core.strength`): ``paper`` (summed losses, g scaled
            by Σ_t / folded into ε as classifier guidance) or ``mean`` (per-pixel mean losses,
            g subtracted as is).
    """

    key = "guidance"

    w_dc: Scale = 0.3
    w_dp: Scale = 0.5
    tau: Annotated[int | str, PlainValidator(_tau)] = "random"
    tau_min: NonNegativeInt = 50
    tau_max: NonNegativeInt = 500
    window: tuple[Fraction, Fraction] = (0.0, 0.6)
    grad_clip: PositiveOrNone = None
    grad_norm: bool = False
    dpg_gradient: Literal["full", "sds"] = "full"
    grad_blur: PositiveOrNone = None
    nan_guard: bool = True
    scale_mode: Literal["mean", "paper"] = "paper"

    def check(self) -> None:
        if self.tau_min > self.tau_max:
            raise self._fail("tau_min", f"must be <= tau_max ({self.tau_max})")
        lo, hi = self.window
        if lo > hi:
            raise self._fail("window", "must satisfy 0 <= lo <= hi <= 1")
        self.window = (float(lo), float(hi))

    @property
    def enabled(self) -> bool:
        """Whether any guidance scale is positive."""
        return self.w_dc > 0 or self.w_dp > 0

    def active(self, t: Any, num_train_timesteps: int) -> bool:
        """Whether guidance applies at timestep ``t`` (enabled and t/T inside the window)."""
        if not self.enabled:
            return False
        lo, hi = self.window
        return lo <= int(t) / num_train_timesteps <= hi

    def check_tau(self, num_train_timesteps: int) -> None:
        """ParamError unless every τ this config can draw is a valid prior timestep."""
        name = "tau" if isinstance(self.tau, int) else "tau_max"
        top = getattr(self, name)
        if top >= num_train_timesteps:
            raise ParamError(
                f"{self.key}.{name}",
                top,
                f"must be < the prior's T = {num_train_timesteps} (tau {top} cannot be drawn)",
            )
