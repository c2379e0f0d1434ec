"""Stage ``synthesize`` / deployment ``synthesize-dataset``: DAG sampling into Parquet shards.

Paper §4 ("Depth guided sampling"): every variant (``unguided``: w_dc = w_dp = 0; ``dag``:
DCG + DPG; optional DCG-only / DPG-only) is sampled with the same per-sample seeds and written as
a shard dataset ``out_dir/<variant>/part-*.parquet``. Shards fan out as Prefect tasks on the task
runner chosen in params (``local``: one process; ``dask``: prefect-dask on a local cluster, a
``dask_cuda.LocalCUDACluster``, or an existing scheduler address). A rerun after a crash renders
only the missing shards; a Dask worker lost beyond the scheduler's retries ends the run with one
line ``error: ...`` (exit 1) that says so. ``python -m flows.synthesize`` reads params.yaml; the
same flow is the Prefect deployment ``synthesize-dataset/<name>`` (prefect.yaml, or
``--serve NAME``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from dag_core.errors import DagError
from dag_core.runtime import RuntimeConfig
from dag_core.shards import completed_shards
from dag_core.synthesis import SynthesisSpec, check_spec_fits
from flows._cli import check_runtime, check_writable, run_stage
from tasks.synthesis_report import write_synthesis_report
from tasks.synthesize import (
    cached_models,
    finish_variant,
    prepare_variant,
    render_shard_task,
    variant_uses_prior,
)

DEFAULT_VARIANTS: dict[str, dict[str, Any]] = {"unguided": {"w_dc": 0.0, "w_dp": 0.0}, "dag": {}}


def make_task_runner(config: dict[str, Any] | None) -> TaskRunner:
    """``{"kind": "local"}`` (default) or ``{"kind": "dask", "n_workers": 2, "address": None,
    "cluster_class": "distributed.LocalCluster"}`` (``dask_cuda.LocalCUDACluster`` on GPUs)."""
    cfg = dict(config or {})
    unknown = sorted(set(cfg) - {"kind", "n_workers", "address", "cluster_class", "cluster_kwargs"})
    if unknown:
        raise DagError(f"unknown task_runner setting(s) {', '.join(map(str, unknown))}")
    kind = cfg.pop("kind", "local")
    n_workers = cfg.get("n_workers", 2)
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise DagError(f"task_runner n_workers must be an int >= 1, got {n_workers!r}")
    if kind == "local":
        return ThreadPoolTaskRunner(max_workers=1)
    if kind != "dask":
        raise DagError(f"unknown task_runner kind '{kind}'; expected local or dask")
    if not os.environ.get("PREFECT_API_URL"):
        raise DagError(
            "the dask task runner needs a Prefect server: start `prefect server start` and set "
            "PREFECT_API_URL (ephemeral mode would start one server per Dask worker)"
        )
    from prefect_dask import DaskTaskRunner

    if cfg.get("address"):
        return DaskTaskRunner(address=cfg["address"])
    return DaskTaskRunner(
        cluster_class=cfg.get("cluster_class", "distributed.LocalCluster"),
        cluster_kwargs={
            "n_workers": int(cfg.get("n_workers", 2)),
            "threads_per_worker": 1,
            "processes": True,
            **cfg.get("cluster_kwargs", {}),
        },
    )


class RunInterrupted(DagError):
    """The run could not finish (e.g. every Dask worker holding a shard died): one line, exit 1.

    Finished shards stay on disk; rerunning the same command renders only the missing ones.
    """

    exit_code = 1


def _lost_worker(exc: BaseException) -> bool:
    """Whether ``exc`` means a Dask worker, the scheduler or the connection to it went away."""
    try:
        from distributed import KilledWorker
        from distributed.comm.core import CommClosedError
    except ImportError:  # pragma: no cover - distributed comes with prefect-dask
        return False
    from concurrent.futures import CancelledError

    return isinstance(exc, KilledWorker | CommClosedError | CancelledError)


@flow(name="render-shards", persist_result=False)
def render_shards(jobs: list[dict[str, Any]]) -> list[str]:
    """Fan the shard jobs out on this flow's task runner and wait for all of them."""
    futures = [render_shard_task.submit(**job) for job in jobs]
    return [f.result() for f in futures]


@flow(name="synthesize-dataset", persist_result=False)
def synthesize(
    base_model: str = "models/base",
    heads: str = "models/heads",
    prior: str | None = "models/prior",
    out_dir: str = "data/synthetic",
    num_samples: int = 256,
    batch_size: int = 16,
    shard_size: int = 64,
    seed: int = 0,
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    depth_dtype: str = "float16",
    guidance: dict[str, Any] | None = None,
    variants: dict[str, dict[str, Any]] | None = None,
    task_runner: dict[str, Any] | None = None,
    metrics_file: str | None = "metrics/synthesis.json",
    report_dir: str | None = "reports/synthesis",
    runtime: dict[str, Any] | None = None,
) -> str:
    """Sample every variant into ``out_dir/<variant>`` shards; returns ``out_dir``.

    ``guidance`` holds the shared guidance settings (w_dc, w_dp, tau, window, grad_clip);
    ``variants`` maps a name to overrides of them (default: unguided and dag). ``runtime`` (the
    shared params group) picks device, precision and guidance levers; every shard task gets it,
    so with a ``dask_cuda.LocalCUDACluster`` each worker samples on its own GPU.
    """
    runtime = check_runtime(runtime)
    rt = RuntimeConfig.from_params(runtime)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DagError(f"batch_size must be an int >= 1, got {batch_size!r}")
    for key, value in (("out_dir", out_dir), ("metrics_file", metrics_file)):
        if value is not None:
            check_writable(value, key)
    if report_dir is not None:
        check_writable(report_dir, "report_dir")
    if variants is not None and not variants:
        raise DagError("variants is empty; expected e.g. {unguided: {...}, dag: {}}")
    variants = variants or DEFAULT_VARIANTS
    settings = {name: {**(guidance or {}), **(over or {})} for name, over in variants.items()}
    spec = SynthesisSpec(
        num_samples=num_samples,
        shard_size=shard_size,
        seed=seed,
        sampler=sampler,
        steps=steps,
        eta=eta,
        depth_dtype=depth_dtype,
        variants=settings,
        runtime=rt.result_record(),
    )
    # Everything is validated (scales, sampler, steps, models, heads/prior fit, task runner)
    # before any output is touched.
    needs_prior = any(variant_uses_prior(spec, v) for v in settings)
    models = cached_models(base_model, heads, prior if needs_prior else None, rt)
    check_spec_fits(models, spec)
    runner = make_task_runner(task_runner)
    spec = SynthesisSpec(**{**spec.__dict__, "hashes": models.hashes})
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    spec_path = root / "_run_spec.json"
    spec_path.write_text(json.dumps(spec.__dict__, indent=2, sort_keys=True) + "\n")
    for variant in settings:
        target = str(root / variant)
        todo = prepare_variant(str(spec_path), variant, target)
        jobs = [
            dict(
                spec_path=str(spec_path),
                variant=variant,
                shard=k,
                out_dir=target,
                base_model=base_model,
                heads=heads,
                prior=prior,
                batch_size=batch_size,
                runtime=runtime,
            )
            for k in todo
        ]
        if jobs:
            try:
                render_shards.with_options(task_runner=runner)(jobs)
            except Exception as exc:
                if not _lost_worker(exc):
                    raise
                done = len(completed_shards(target) & set(range(spec.num_shards)))
                raise RunInterrupted(
                    f"variant {variant}: the task runner lost a worker ({type(exc).__name__}: "
                    f"{exc}); {done}/{spec.num_shards} shards of {target} are written, rerun the "
                    "same command to resume"
                ) from None
        finish_variant(target, spec.num_shards)
    if metrics_file or report_dir:
        write_synthesis_report(
            out_dir, list(settings), base_model, heads, prior, metrics_file, report_dir, runtime
        )
    return out_dir


def serve(name: str) -> None:
    """Serve the flow as deployment ``synthesize-dataset/<name>`` (defaults from params.yaml)."""
    from flows._cli import load_params

    synthesize.serve(name=name, parameters=load_params("params.yaml", "synthesize"))


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--serve":
        serve(sys.argv[2] if len(sys.argv) > 2 else "local")
    else:
        run_stage(synthesize, "synthesize")
