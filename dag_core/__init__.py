"""DAG — Depth-Aware Guidance for diffusion models (Kim et al., arXiv 2212.08861).

A pure library (torch, diffusers, pyarrow; no Prefect): one idea per module.
"""

from dag_core.errors import DagError

__all__ = ["DagError"]
__version__ = "0.1.0"
