"""Prefect flows: one per DVC stage (`python -m flows.<stage>` reads params.yaml).

Importing this package sets the process defaults (:mod:`dag_core.process`: Prefect's home in the
project's ignored ``.prefect/`` folder, analytics off, sleeping OpenMP threads, reproducible MKL)
unless the caller already chose otherwise. It imports neither Prefect nor torch: a stage checks
its params first (:mod:`flows.cli`).
"""

from __future__ import annotations

import dag_core.process  # noqa: F401  (before Prefect or torch loads)
