"""Settings of the task runner a synthesis run fans its shards out on (no Prefect import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

from dag_core.validation import Checked


@dataclass
class TaskRunnerConfig(Checked):
    """The ``synthesize.task_runner`` params group (:func:`flows.synthesize.make_task_runner`).

    Args:
        kind: ``local`` (one process, shards one after the other) or ``dask`` (prefect-dask;
            needs a Prefect server: ``PREFECT_API_URL``).
        n_workers: Dask worker processes of a cluster the run starts itself.
        address: The scheduler of an existing Dask cluster (``tcp://host:8786``); None: start
            a cluster of ``cluster_class``.
        cluster_class: The cluster the run starts (``dask_cuda.LocalCUDACluster``: one worker
            per GPU).
        cluster_kwargs: More keyword arguments of ``cluster_class``.
    """

    key = "task_runner"

    kind: Literal["local", "dask"] = "local"
    n_workers: Annotated[int, Field(ge=1)] = 2
    address: str | None = None
    cluster_class: Annotated[str, Field(min_length=1)] = "distributed.LocalCluster"
    cluster_kwargs: dict[str, Any] = field(default_factory=dict)
