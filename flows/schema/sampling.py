"""The cheap model checks of the sampling stages (synthesize, sweep): base model, heads and
depth prior present and compatible with the steps and every guided config's τ."""

from __future__ import annotations

from typing import Any

from dag_core.configs.guidance import GuidanceConfig
from dag_core.errors import ParamError
from flows.schema import models


def check_sampling(key: Any, p: dict[str, Any], guided: list[GuidanceConfig]) -> None:
    """Base model, heads and (for DPG) prior of a sampling stage: present and compatible with
    the steps and with every guided config's τ."""
    t = models.base_model_timesteps(key("base_model"), p["base_model"])
    if t is not None and p["steps"] > t:
        raise ParamError(key("steps"), p["steps"], f"must be <= the base model's T = {t}")
    heads = models.heads_info(key("heads"), p["heads"])
    heads_t = int(heads.get("num_train_timesteps", 1000))
    if t is not None and guided and heads_t != t:
        raise ParamError(
            key("heads"), p["heads"], f"heads assume T={heads_t}, base model has T={t}"
        )
    dpg = [c for c in guided if c.w_dp > 0]
    if dpg and p["prior"] is not None:
        prior = models.prior_info(key("prior"), p["prior"])
        if prior.get("norm") != heads.get("norm"):
            raise ParamError(
                key("prior"),
                p["prior"],
                f"depth normalisation {prior.get('norm')} differs from the heads' "
                f"{heads.get('norm')}",
            )
        for config in dpg:
            try:
                config.check_tau(prior["num_train_timesteps"])
            except ParamError as exc:
                raise exc.rebased("guidance", key("guidance")) from None
