"""DAG — Depth-Aware Guidance for diffusion models (Kim et al., arXiv 2212.08861).

A pure library (torch, diffusers, pyarrow; no Prefect): one idea per module.

Importing the package before torch turns on MKL's conditional numerical reproducibility
(``MKL_CBWR=AUTO``, read once when torch loads MKL) unless the caller set ``MKL_CBWR``: without it,
MKL's CPU kernels on AVX-512 machines give different low bits from one run to the next (a
resumed synthesis re-rendered a shard to other bytes than the uninterrupted run). A ``MKL_CBWR``
already in the environment wins.
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO")

from dag_core.errors import DagError

__all__ = ["DagError"]
__version__ = "0.1.0"
