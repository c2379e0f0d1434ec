"""Stage ``downstream``: train monocular depth nets on real, synthetic and mixed data (paper §5.3).

One depth network per training set, every one with the same network, budget and rules
(``config``): the labelled pairs alone (the baseline), each synthetic set alone (the paper's
comparison: unguided vs DAG pairs), and each synthetic set with the labelled pairs (``regime``
``finetune``: pretrain on synthetic pairs, fine-tune on the labelled ones; or ``mix``). With a
``validation`` set (held-out labelled pairs, never the test split) each net keeps its best
checkpoint. Sets may re-label their images with the depth heads or the reference estimator, or
take their first N pairs: the ``diagnostic`` table separates label noise from the image domain
gap, and ``curve`` gives AbsRel against N. Every net is tested on the held-out procedural split
and, when ``nyu_path`` is set, on NYU-Depth v2 (Eigen crop). ``runs`` > 1 trains every set that
many times (seeds ``config.seed`` + 0 … runs − 1, the same for every set), so each comparison's
CI covers training noise as well as the test images. A ``finetune`` set whose pairs a set trains
on ``alone`` continues that run from its state at the branch step (the same bytes as training it
from step 0; :mod:`dag_core.downstream.training`). Nets are saved in
``{models_dir}/{set}/seed-{seed}``, ``workers`` of them training at once (threads that share the
CPU's torch threads; no training thread uses torch's global RNG, so each net is the one it would
be trained alone on that many threads); the folder is replaced only when every net has trained.
Nothing finished is lost: nets (and re-labelled sets) are trained in the resume folder
``.<models_dir>.resume`` beside it, each recorded the moment it is saved, so a run stopped by
Ctrl-C, SIGTERM or ``kill -9`` says ``k/n nets trained`` and its rerun trains only the missing
nets, ending with the bytes of an uninterrupted run (:mod:`dag_core.resumable`).
Every parameter defaults to params.yaml's ``downstream`` group.
"""

from __future__ import annotations

if __name__ == "__main__":  # check the params before Prefect and torch load (flows.cli.run.main)
    from flows.cli.run import main
    from flows.schema.downstream import DownstreamParams

    main(DownstreamParams)

import shutil
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from dag_core.atomic import replace_dir
from dag_core.configs.downstream import DownstreamConfig
from dag_core.interrupt import reporting_progress, stop_work_on_interrupt
from dag_core.resumable import held_resume_dir, input_digest, is_done, unit_key
from dag_core.runtime import shared_cpu
from flows._params import stage_defaults
from flows.cli.run import check_runtime
from flows.schema.base import validate
from flows.schema.downstream import DownstreamParams, branch_sources, curve_sets, expanded_sets
from tasks.downstream import evaluate_training_nets, fit_training_set, relabel_training_set

D = stage_defaults("downstream")


@flow(name="fit-depth-nets", persist_result=False)
def fit_depth_nets(jobs: list[dict[str, Any]], after: dict[int, int]) -> list[str]:
    """Train the nets of ``jobs`` (:func:`~tasks.downstream.fit_training_set` arguments) on this
    flow's task runner; job i starts once job ``after[i]`` (its branch source) has finished.

    Ctrl-C / SIGTERM stop the nets training in other threads as well (:func:`dag_core.interrupt.
    stop_work`), so the run stops at once."""
    futures: list[Any] = []
    with stop_work_on_interrupt():
        for i, job in enumerate(jobs):
            wait = [futures[after[i]]] if i in after else None
            futures.append(fit_training_set.submit(**job, wait_for=wait))
        return [f.result() for f in futures]


@flow(name="downstream", persist_result=False)
def downstream(
    train_sets: dict[str, Any] = D["train_sets"],
    labelled: str | None = D["labelled"],
    validation: str | None = D["validation"],
    base_model: str | None = D["base_model"],
    heads: str | None = D["heads"],
    estimator: str | None = D["estimator"],
    world_test: str = D["world_test"],
    nyu_path: str | None = D["nyu_path"],
    nyu_median_scaling: bool = D["nyu_median_scaling"],
    comparisons: list[list[str]] = D["comparisons"],
    diagnostic: list[str] = D["diagnostic"],
    curve: dict[str, list[Any]] | None = D["curve"],
    n_boot: int = D["n_boot"],
    runs: int = D["runs"],
    workers: int = D["workers"],
    models_dir: str = D["models_dir"],
    norm: dict[str, Any] = D["norm"],
    config: dict[str, Any] = D["config"],
    metrics_file: str = D["metrics_file"],
    table_file: str = D["table_file"],
    curve_dir: str = D["curve_dir"],
    runtime: dict[str, Any] = D["runtime"],
) -> str:
    """Train ``runs`` depth nets per training set and evaluate them all; each ``comparisons``
    pair (set, reference) gets its paired difference on the same test images with a bootstrap
    CI (``n_boot`` resamples over test images and training runs)."""
    p = validate(DownstreamParams, locals())
    runtime = check_runtime(p["runtime"])
    first = DownstreamConfig.from_params(p["config"], "config").seed
    seeds = [first + r for r in range(p["runs"])]
    sets = expanded_sets(p)
    branches = branch_sources(sets)  # finetune set → the alone set it continues
    sources = set(branches.values())
    # branch sources first (their continuations wait for them), continuations last
    order = sorted(sets, key=lambda n: 0 if n in sources else 2 if n in branches else 1)
    with held_resume_dir(p["models_dir"]) as work:
        data: dict[str, str] = {}
        data_key: dict[str, str | None] = {}
        relabelled: list[str] = []
        for name in order:
            ts, source = sets[name], branches.get(name)
            if source:
                data[name], data_key[name] = data[source], data_key[source]
            elif ts.labels == "stored":
                data[name], data_key[name] = ts.data, input_digest(ts.data)
            else:
                relabelled.append(name)
                data[name] = str(work / "_relabelled" / name)
                labeller = (
                    (p["base_model"], p["heads"]) if ts.labels == "heads" else (p["estimator"],)
                )
                data_key[name] = unit_key(
                    {
                        "train_set": ts.to_dict(),
                        "data": input_digest(ts.data),
                        "labeller": [input_digest(m) for m in labeller],
                        "runtime": runtime,
                    }
                )
                if not is_done(data[name], data_key[name]):
                    relabel_training_set(
                        name,
                        ts.to_dict(),
                        data[name],
                        p["base_model"],
                        p["heads"],
                        p["estimator"],
                        runtime,
                        done_key=data_key[name],
                    )
        jobs: list[dict[str, Any]] = []
        keys: dict[tuple[str, int], str] = {}
        labelled_key, validation_key = input_digest(p["labelled"]), input_digest(p["validation"])
        for name in order:
            source = branches.get(name)
            for seed in seeds:
                state = work / "_branch" / (source or name) / f"seed-{seed}.pt"
                keys[name, seed] = unit_key(
                    {
                        "train_set": sets[name].to_dict(),
                        "data": data_key[name],
                        "config": {**p["config"], "seed": seed},
                        "norm": p["norm"],
                        "labelled": [p["labelled"], labelled_key],
                        "validation": [p["validation"], validation_key],
                        "runtime": runtime,
                        "branch_to": name in sources,
                        "branch_from": keys[source, seed] if source else None,
                    }
                )
                jobs.append(
                    dict(
                        name=name,
                        train_set=sets[name].to_dict(),
                        data=data[name],
                        out_dir=str(work / name / f"seed-{seed}"),
                        config={**p["config"], "seed": seed},
                        norm=p["norm"],
                        labelled=p["labelled"],
                        validation=p["validation"],
                        runtime=runtime,
                        branch_to=str(state) if name in sources else None,
                        branch_from=str(state) if source else None,
                        done_key=keys[name, seed],
                    )
                )
        todo = [job for job in jobs if not is_done(job["out_dir"], job["done_key"])]
        if len(todo) < len(jobs):
            get_run_logger().info(
                "%d/%d nets already trained (kept from an interrupted run in %s); %d to train",
                len(jobs) - len(todo),
                len(jobs),
                work,
                len(todo),
            )
        position = {(job["name"], job["config"]["seed"]): i for i, job in enumerate(todo)}
        after = {  # a continuation waits for its branch source when that trains in this run too
            i: position[source, job["config"]["seed"]]
            for i, job in enumerate(todo)
            if (source := branches.get(job["name"])) and (source, job["config"]["seed"]) in position
        }

        def trained() -> str:
            done = sum(is_done(job["out_dir"], job["done_key"]) for job in jobs)
            return f"{done}/{len(jobs)} nets trained"

        workers = p["workers"]
        with reporting_progress(trained), shared_cpu(workers):
            runner = ThreadPoolTaskRunner(max_workers=workers)
            fit_depth_nets.with_options(task_runner=runner)(todo, after)
        metrics = evaluate_training_nets(
            {name: [str(work / name / f"seed-{seed}") for seed in seeds] for name in sets},
            p["world_test"],
            p["nyu_path"],
            p["nyu_median_scaling"],
            p["comparisons"],
            p["diagnostic"],
            curve_sets(p),
            p["n_boot"],
            p["metrics_file"],
            p["table_file"],
            p["curve_dir"],
            runtime,
        )
        with replace_dir(p["models_dir"]) as tmp:
            for name in sets:
                for seed in seeds:
                    shutil.copytree(work / name / f"seed-{seed}", tmp / name / f"seed-{seed}")
            for name in relabelled:
                shutil.copytree(data[name], tmp / "_relabelled" / name)
        shutil.rmtree(work, ignore_errors=True)  # every net is in models_dir now
    return metrics
