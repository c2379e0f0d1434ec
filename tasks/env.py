"""Process environment defaults, set before prefect or torch is imported.

Imported first by :mod:`tasks` (so a worker that imports only the tasks gets them too) and safe to
import again: every value is a default (:meth:`os.environ.setdefault`), so a caller's own choice
wins. Points Prefect at the project's ignored ``.prefect/`` folder, turns analytics off, makes
idle OpenMP threads sleep instead of spin, and (importing :mod:`dag_core`) makes MKL's results
reproducible from run to run.
"""

from __future__ import annotations

import os
from pathlib import Path

import dag_core  # noqa: F401  (MKL_CBWR, before torch loads MKL)

PROJECT_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("PREFECT_HOME", str(PROJECT_ROOT / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Idle OpenMP threads must sleep, not spin: on a small shared CPU spinning slows torch 10-50x.
# (Read once, when torch loads its OpenMP runtime, so it is set here before any torch import.)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
