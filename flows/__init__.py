"""Prefect flows: one per DVC stage (`python -m flows.<stage>` reads params.yaml).

Importing this package points Prefect at the project's ignored ``.prefect/`` folder, turns
analytics off and (importing :mod:`dag_core`) makes MKL reproducible from run to run, unless the
caller already chose otherwise. It imports neither Prefect nor torch: a stage checks its params
first (:mod:`flows._cli`).
"""

from __future__ import annotations

import os
from pathlib import Path

import dag_core  # noqa: F401  (MKL_CBWR, before torch loads MKL)

_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_HOME", str(_ROOT / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Idle OpenMP threads must sleep, not spin: on a small shared CPU spinning slows torch 10-50x.
# (Read once, when torch loads its OpenMP runtime, so it is set here before any torch import.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
