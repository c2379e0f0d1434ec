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

Every parameter defaults to params.yaml's ``synthesize`` group (read when this module is
imported), so a deployment run, a served deployment and ``dvc repro`` start from the same
values and write the same bytes for the same samples. Metrics and report: with params.yaml's
``out_dir`` they go to ``metrics_file`` and ``report_dir`` (DVC's declared outputs). A run into
another ``out_dir`` whose ``metrics_file`` / ``report_dir`` are still params.yaml's writes them
beside its data instead, ``{out_dir}/_metrics.json`` and ``{out_dir}/_report/``, never over the
default run's; give other paths (or null: none) to put them elsewhere.
"""

from __future__ import annotations

if __name__ == "__main__":  # check the params before Prefect and torch load (flows.cli.run.main)
    from flows.cli.run import main
    from flows.schema.synthesize import SynthesizeParams

    main(SynthesizeParams)

import json
import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from dag_core.atomic import write_text_atomic
from dag_core.cards import synthetic_card
from dag_core.errors import DagError, RunInterrupted
from dag_core.interrupt import reporting_progress, stop_work_on_interrupt
from dag_core.runtime import RuntimeConfig
from dag_core.shards import completed_shards
from dag_core.synthesis import SPEC_NAME, SynthesisSpec, check_spec_fits, spec_matches
from flows._params import stage_defaults
from flows.cli.run import check_runtime
from flows.schema.base import validate
from flows.schema.synthesize import SynthesizeParams
from flows.schema.task_runner import TaskRunnerConfig
from tasks.artifacts import Progress, advance, synthesis_artifacts
from tasks.synthesis_report import write_synthesis_report
from tasks.synthesize import (
    cached_models,
    finish_variant,
    prepare_variant,
    render_shard_task,
    variant_uses_prior,
)

__all__ = ["RunInterrupted", "make_task_runner", "render_shards", "synthesize"]

D = stage_defaults("synthesize")
#: the Prefect progress artifact of the shards written
SHARDS_KEY = "synthesize-shards"


def make_task_runner(config: dict[str, Any] | TaskRunnerConfig | None) -> TaskRunner:
    """The task runner of :class:`~flows.schema.task_runner.TaskRunnerConfig` settings:
    ``local`` (one thread) or ``dask`` (prefect-dask: an existing scheduler at ``address``, or
    a ``cluster_class`` cluster of ``n_workers`` one-thread processes)."""
    cfg = TaskRunnerConfig.from_params(config)
    if cfg.kind == "local":
        return ThreadPoolTaskRunner(max_workers=1)
    if not os.environ.get("PREFECT_API_URL"):
        raise DagError(
            "the dask task runner needs a Prefect server: start `prefect server start` and set "
            "PREFECT_API_URL (ephemeral mode would start one server per Dask worker)"
        )
    from prefect_dask import DaskTaskRunner

    if cfg.address:
        return DaskTaskRunner(address=cfg.address)
    return DaskTaskRunner(
        cluster_class=cfg.cluster_class,
        cluster_kwargs={
            "n_workers": cfg.n_workers,
            "threads_per_worker": 1,
            "processes": True,
            **cfg.cluster_kwargs,
        },
    )


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
    """Fan the shard jobs out on this flow's task runner and wait for all of them.

    Ctrl-C / SIGTERM arrive in this (the main) thread: the shards rendering on the thread-pool
    runner are stopped too, and queued ones refuse to start (:func:`dag_core.interrupt.
    stop_work`), so the runner's shutdown does not wait for them."""
    with stop_work_on_interrupt():
        futures = [render_shard_task.submit(**job) for job in jobs]
        paths = []
        for future in futures:  # in submission order: the count lags, the waiting is unchanged
            paths.append(future.result())
            advance(SHARDS_KEY)  # the parent flow's shards-written progress
        return paths


def shards_written(root: Path, spec: SynthesisSpec) -> str:
    """``k/n shards written``: the shards of this spec on disk that a rerun keeps."""
    done = 0
    for variant in spec.variants:
        if spec_matches(root / variant, spec.variant_spec(variant)):
            done += len(completed_shards(root / variant) & set(range(spec.num_shards)))
    return f"{done}/{spec.num_shards * len(spec.variants)} shards written"


def _render_variant(
    p: dict[str, Any],
    spec: SynthesisSpec,
    spec_path: Path,
    variant: str,
    runner: TaskRunner,
    runtime: dict[str, Any],
) -> None:
    """Render the shards of ``variant`` that are not done yet, then write its manifest."""
    root = spec_path.parent
    target = str(root / variant)
    todo = prepare_variant(str(spec_path), variant, target)
    jobs = [
        dict(
            spec_path=str(spec_path),
            variant=variant,
            shard=k,
            out_dir=target,
            base_model=p["base_model"],
            heads=p["heads"],
            prior=p["prior"],
            batch_size=p["batch_size"],
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
    card = synthetic_card(
        variant,
        license=p["license"],
        base_model=p["base_model"],
        heads=p["heads"],
        prior=p["prior"] if variant_uses_prior(spec, variant) else None,
        num_samples=spec.num_samples,
    )
    finish_variant(target, spec.num_shards, card.to_dict())


@flow(name="synthesize-dataset", persist_result=False)
def synthesize(
    base_model: str = D["base_model"],
    heads: str = D["heads"],
    prior: str | None = D["prior"],
    out_dir: str = D["out_dir"],
    num_samples: int = D["num_samples"],
    batch_size: int = D["batch_size"],
    shard_size: int = D["shard_size"],
    seed: int = D["seed"],
    sampler: str = D["sampler"],
    steps: int = D["steps"],
    eta: float = D["eta"],
    depth_dtype: str = D["depth_dtype"],
    license: str = D["license"],
    guidance: dict[str, Any] = D["guidance"],
    variants: dict[str, dict[str, Any] | None] = D["variants"],
    task_runner: dict[str, Any] = D["task_runner"],
    metrics_file: str | None = D["metrics_file"],
    report_dir: str | None = D["report_dir"],
    runtime: dict[str, Any] = D["runtime"],
) -> str:
    """Sample every variant into ``out_dir/<variant>`` shards; returns ``out_dir``.

    ``guidance`` holds the shared guidance settings (:class:`dag_core.guidance.GuidanceConfig`
    fields); ``variants`` maps a name to overrides of them. ``runtime`` (the shared params
    group) picks device, precision and guidance levers; every shard task gets it, so with a
    ``dask_cuda.LocalCUDACluster`` each worker samples on its own GPU. Metrics and report of a
    run into another ``out_dir`` than params.yaml's land beside its data (module doc).
    """
    p = validate(SynthesizeParams, locals())
    out_dir, metrics_file, report_dir = p["out_dir"], p["metrics_file"], p["report_dir"]
    runtime = check_runtime(p["runtime"])
    rt = RuntimeConfig.from_params(runtime)
    settings = {name: {**p["guidance"], **(over or {})} for name, over in p["variants"].items()}
    spec = SynthesisSpec(
        num_samples=p["num_samples"],
        shard_size=p["shard_size"],
        seed=p["seed"],
        sampler=p["sampler"],
        steps=p["steps"],
        eta=p["eta"],
        depth_dtype=p["depth_dtype"],
        variants=settings,
        runtime=rt.result_record(),
    )
    # Everything is validated (scales, sampler, steps, models, heads/prior fit, task runner)
    # before any output is touched.
    needs_prior = any(variant_uses_prior(spec, v) for v in settings)
    models = cached_models(p["base_model"], p["heads"], p["prior"] if needs_prior else None, rt)
    check_spec_fits(models, spec)
    runner = make_task_runner(p["task_runner"])
    spec = SynthesisSpec(**{**spec.__dict__, "hashes": models.hashes})
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    spec_path = root / "_run_spec.json"
    write_text_atomic(spec_path, json.dumps(spec.__dict__, indent=2, sort_keys=True) + "\n")
    total = spec.num_shards * len(settings)
    done = int(shards_written(root, spec).split("/")[0])
    with (
        reporting_progress(lambda: shards_written(root, spec)),
        Progress("shards written", total, SHARDS_KEY, done=done),
    ):
        for variant in settings:
            _render_variant(p, spec, spec_path, variant, runner, runtime)
    others = sorted(
        d.name for d in root.iterdir() if d.name not in settings and (d / SPEC_NAME).exists()
    )
    if others:  # never deleted here: they may be a user's; in a DVC output they change its hash
        get_run_logger().warning(
            "%s also holds variant folders this run did not write: %s (remove them to keep the "
            "dataset to this run's variants)",
            out_dir,
            ", ".join(others),
        )
    if metrics_file or report_dir:
        write_synthesis_report(
            out_dir,
            list(settings),
            p["base_model"],
            p["heads"],
            p["prior"],
            metrics_file,
            report_dir,
            runtime,
        )
    synthesis_artifacts(out_dir, list(settings), metrics_file, report_dir)
    return out_dir
