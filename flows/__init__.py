"""Prefect flows: one per DVC stage (`python -m flows.<stage>` reads params.yaml).

Importing this package sets the process environment defaults of :mod:`tasks.env` (Prefect at the
project's ignored ``.prefect/`` folder, analytics off, sleeping OpenMP threads, reproducible MKL)
before any flow module imports prefect or torch, unless the caller already chose otherwise.
"""

from __future__ import annotations

import tasks.env  # noqa: F401
