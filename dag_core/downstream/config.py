"""The downstream depth network's budget: one :class:`DownstreamConfig` for every training set.

The class lives in :mod:`dag_core.configs.downstream` (importable without torch, for checking a
stage's params before anything loads); this module keeps its name in the downstream package.
"""

from __future__ import annotations

from dag_core.configs.downstream import LOSSES, DownstreamConfig

__all__ = ["LOSSES", "DownstreamConfig"]
