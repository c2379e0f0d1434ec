"""The design of a guidance sweep (paper Fig. 8): its series, points and checks, without torch.

A sweep samples the same seeds at every w = w_dc = w_dp of each ``scale_mode`` and guidance
window, plus named remedy series (guidance overrides on the first mode and window). The stage
``sweep`` (:mod:`tasks.sweep`) renders and scores the points; the functions here say which
points there are and reject a design that cannot run, before anything is sampled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

from dag_core.configs.guidance import GuidanceConfig
from dag_core.configs.synthesis import guidance_config
from dag_core.errors import DagError, ParamError
from dag_core.validation import check_value

#: a guidance scale of a sweep point
Number = Annotated[float, Field(allow_inf_nan=False)]
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")


def series_name(mode: str, window: list[float] | tuple[float, float]) -> str:
    """File stem of one sweep series: ``<mode>_<lo>-<hi>`` (e.g. ``paper_0-0.6``)."""
    return f"{mode}_{float(window[0]):g}-{float(window[1]):g}"


def mode_scales(scales: list[float] | dict[str, list[float]], mode: str) -> list[float]:
    """The scales of ``mode``: one list for every mode, or a ``{mode: [w, ...]}`` mapping (w
    means different things per mode, :mod:`dag_core.strength`); sorted, 0 always included."""
    chosen = scales.get(mode) if isinstance(scales, dict) else scales
    if not chosen:
        raise DagError(f"sweep has no scales for mode '{mode}'")
    return sorted({0.0, *(float(w) for w in chosen)})


def point_settings(
    guidance: Mapping[str, Any],
    mode: str,
    window: list[float] | tuple[float, float],
    w: float,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Guidance settings of one sweep point: the shared ``guidance``, w_dc = w_dp = w, the mode
    and window, then a remedy's ``overrides`` (``w_dc: 0`` = DPG alone)."""
    return {
        **guidance,
        "w_dc": w,
        "w_dp": w,
        "scale_mode": mode,
        "window": list(window),
        **(overrides or {}),
    }


def remedy_settings(
    guidance: Mapping[str, Any],
    modes: list[str],
    windows: list[list[float]],
    remedy: Mapping[str, Any],
    w: float,
) -> dict[str, Any]:
    """Settings of one remedy point: :func:`point_settings` on the first mode and window."""
    return point_settings(guidance, modes[0], windows[0], w, remedy.get("guidance"))


def check_remedies(
    remedies: Any,
    guidance: Mapping[str, Any],
    modes: list[str],
    windows: list[list[float]],
    key: str = "sweep.remedies",
) -> None:
    """One-line errors for remedy series (name, scales, guidance overrides) before sampling."""
    if not isinstance(remedies, dict):
        raise DagError(f"sweep remedies must map names to {{scales, guidance}}, got {remedies!r}")
    taken = {series_name(m, w) for m in modes for w in windows}
    for name, remedy in remedies.items():
        if not isinstance(name, str) or not _PLAIN.fullmatch(name) or name in taken:
            raise DagError(f"sweep remedy name {name!r} must be a new plain name ([A-Za-z0-9_-])")
        if not isinstance(remedy, dict) or set(remedy) - {"scales", "guidance"}:
            raise DagError(f"sweep remedy '{name}' must map scales and guidance, got {remedy!r}")
        scales = remedy.get("scales")
        if not isinstance(scales, list) or not scales:
            raise DagError(f"sweep remedy '{name}' needs a non-empty scales list, got {scales!r}")
        overrides = remedy.get("guidance", {})
        if not isinstance(overrides, dict):
            raise DagError(f"sweep remedy '{name}' guidance must be a mapping")
        fixed = {k: overrides[k] for k in ("w_dc", "w_dp") if k in overrides}
        if len(fixed) == 2 or any(v != 0 for v in fixed.values()):
            # w = 0 of every series is the shared unguided set, and w must move something
            raise DagError(
                f"sweep remedy '{name}' may only switch one term off (w_dc: 0 or w_dp: 0), "
                f"got {fixed}"
            )
        for i, w in enumerate(scales):
            check_value(Number, w, f"{key}.{name}.scales[{i}]")
            settings = remedy_settings(guidance, modes, windows, remedy, w)
            guidance_config(name, settings, f"{key}.{name}.guidance")


def _written_key(
    exc: ParamError, key: str, scale: str | None, mode: int, window: tuple[int, list[float]]
) -> ParamError:
    """A sweep point's guidance error under the key the user wrote: the scale (``scale``: its
    key, None for the w = 0 every series has), the mode or the window."""
    field = exc.key.removeprefix(f"{GuidanceConfig.key}.")
    if field in ("w_dc", "w_dp") and scale is not None:
        return ParamError(scale, exc.value, exc.reason)
    if field == "scale_mode":
        return ParamError(f"{key}.modes[{mode}]", exc.value, exc.reason)
    if field.startswith("window"):
        sub = field.removeprefix("window")
        value = exc.value if sub else window[1]  # the window as written
        return ParamError(f"{key}.windows[{window[0]}]{sub}", value, exc.reason)
    return exc


def check_sweep(
    modes: list[str],
    scales: list[float] | dict[str, list[float]],
    windows: list[list[float]],
    num_samples: int,
    key: str = "sweep",
) -> None:
    """One-line errors for a sweep that cannot run, before anything is sampled; a bad scale,
    mode or window is named by the key it was written under (``sweep.scales.paper[0]``,
    ``sweep.modes[1]``, ``sweep.windows[0]``), not by the guidance field it would set."""
    if not modes or not scales or not windows:
        raise DagError("sweep needs at least one mode, one scale and one window")
    if isinstance(scales, dict) and set(scales) - set(modes):
        raise DagError(f"sweep scales name unknown mode(s) {sorted(set(scales) - set(modes))}")
    for m, mode in enumerate(modes):
        mode_scales(scales, mode)  # the mode has scales
        where = f"{key}.scales.{mode}" if isinstance(scales, dict) else f"{key}.scales"
        written = scales[mode] if isinstance(scales, dict) else scales
        points = [(None, 0.0), *((f"{where}[{i}]", w) for i, w in enumerate(written))]
        for j, window in enumerate(windows):
            for scale, w in points:  # w = 0 is a point of every series
                try:
                    GuidanceConfig(w_dc=w, w_dp=w, scale_mode=mode, window=tuple(window))  # type: ignore[arg-type]
                except ParamError as exc:
                    raise _written_key(exc, key, scale, m, (j, window)) from None
    if num_samples < 2:
        raise DagError(f"sweep num_samples must be >= 2, got {num_samples}")
