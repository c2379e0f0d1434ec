"""Process defaults of the commands and Prefect workers, set before Prefect or torch loads.

Imported first by :mod:`flows` (every ``python -m flows.<stage>``) and by :mod:`tasks` (a worker
that imports only the tasks), and safe to import again: every value is a default
(:meth:`os.environ.setdefault`), so a caller's own choice wins. Points Prefect at the project's
ignored ``.prefect/`` folder, turns analytics off and makes idle OpenMP threads sleep instead of
spin; importing :mod:`dag_core` first makes MKL's results reproducible from run to run. It imports
neither Prefect nor torch (a stage checks its params before either loads).
"""

from __future__ import annotations

import os
from pathlib import Path

#: the project folder (the checkout holding ``dag_core/``)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: every default, by variable; a value already in the environment wins
DEFAULTS: dict[str, str] = {
    "PREFECT_HOME": str(PROJECT_ROOT / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # Idle OpenMP threads must sleep, not spin: on a small shared CPU spinning slows torch 10-50x
    # (read once, when torch loads its OpenMP runtime, so it is set before any torch import).
    "OMP_WAIT_POLICY": "PASSIVE",
}

for _name, _value in DEFAULTS.items():
    os.environ.setdefault(_name, _value)
