"""Scale-out as users run it (README "Scale out"): real servers, real workers, real bytes.

* one set of defaults: in a copy of the project with tiny models, ``dvc repro``, a Prefect
  **work pool** (``prefect work-pool create --type process``, ``prefect deploy`` from
  prefect.yaml, a ``prefect worker start`` process, ``prefect deployment run
  'synthesize-dataset/default'``) and a ``--serve`` deployment, given no synthesis parameters,
  all take params.yaml's and write the same shard bytes; the worker stops cleanly (none of its
  processes outlive it);
* an **external Dask cluster** started as separate commands (``dask scheduler``, two ``dask
  worker``), as on several machines: ``task_runner.address`` gives the same bytes as a local run,
  and when a worker dies mid-run the run still ends with exactly those bytes (Dask reschedules
  the lost shards; a failed run names the lost worker in one line and a rerun resumes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from dag_core.shards import verify_dataset
from tests.prefect_server import free_port, prefect_env
from tests.tiny_models import write_tiny_models

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_tiny_models(tmp_path_factory.mktemp("models"))


def _group(models: dict[str, str], out: Path, **over: Any) -> dict[str, Any]:
    """The synthesize params of one run (tiny: 32² church-layout U-Net, few DDIM steps)."""
    return {
        **models,
        "out_dir": str(out),
        "num_samples": 12,
        "batch_size": 2,
        "shard_size": 2,
        "seed": 3,
        "sampler": "ddim",
        "steps": 4,
        "eta": 0.0,
        "depth_dtype": "float16",
        "guidance": {"w_dc": 40.0, "w_dp": 40.0, "tau": 100},
        "variants": {"unguided": {"w_dc": 0.0, "w_dp": 0.0}, "dag": {}},
        "metrics_file": None,
        "report_dir": None,
        **over,
    }


def _env(tmp: Path, api: str) -> dict[str, str]:
    env = prefect_env(tmp / "home", api)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _local_run(tmp: Path, env: dict[str, str], group: dict[str, Any]) -> subprocess.Popen[str]:
    params = tmp / f"params-{Path(group['out_dir']).name}.yaml"
    params.write_text(yaml.safe_dump({"synthesize": group}))
    return subprocess.Popen(
        [sys.executable, "-m", "flows.synthesize", "--params", str(params)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.glob("part-*.parquet"))
    }


def _same_bytes(a: Path, b: Path, variants: tuple[str, ...] = ("unguided", "dag")) -> None:
    for variant in variants:
        rows = verify_dataset(a / variant)["total_rows"]
        assert verify_dataset(b / variant)["total_rows"] == rows
        assert _digest(a / variant) == _digest(b / variant), variant


def _spawn(
    cmd: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60) -> int:
    """Signal a command's whole process group and wait for the command itself."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    return proc.returncode


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _descendants(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


@pytest.fixture
def env(tmp_path: Path, api: str) -> dict[str, str]:
    return _env(tmp_path, api)


TINY_SYNTHESIS = {"num_samples": 4, "batch_size": 2, "shard_size": 2, "steps": 3}


def _tiny_project(dst: Path) -> Path:
    """The project's source files in a fresh folder, tiny models at params.yaml's model paths
    and params.yaml with only the synthesis sizes made tiny: every other synthesize parameter
    (guidance, variants, seed, sampler, runtime, ...) is the shipped default."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in listed:
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    models = write_tiny_models(dst / "models")
    for key in ("base_model", "heads", "prior"):
        assert Path(models[key]) == dst / params["synthesize"][key]
    params["synthesize"].update(TINY_SYNTHESIS)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    return dst


def _run_deployment(name: str, env: dict[str, str], cwd: Path, watch: subprocess.Popen) -> str:
    """``prefect deployment run NAME --watch`` (no parameters); asserts it completed."""
    cmd = [sys.executable, "-m", "prefect", "deployment", "run", name]
    cmd += ["--watch", "--watch-interval", "1"]
    runner = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    while runner.poll() is None:
        assert watch.poll() is None, f"{watch.args} exited"
        time.sleep(0.2)
    out = runner.stdout.read()  # type: ignore[union-attr]
    assert runner.returncode == 0 and "COMPLETED" in out.upper(), out[-3000:]
    return out


def test_dvc_work_pool_and_served_runs_write_the_same_bytes(tmp_path: Path, api: str) -> None:
    """``dvc repro``, ``prefect deployment run`` on prefect.yaml's work-pool deployment and a
    ``--serve`` deployment, none given any synthesis parameter but the work-pool deployment's
    ``out_dir``: all start from params.yaml, so all write the same shard bytes; the two
    deployments' metrics and reports land beside their data, the DVC run's are untouched."""
    project = _tiny_project(tmp_path / "project")
    env = prefect_env(tmp_path / "home", api)
    env["PYTHONPATH"] = str(project)
    variants = tuple(
        yaml.safe_load((project / "params.yaml").read_text())["synthesize"]["variants"]
    )
    assert variants == ("unguided", "dag")  # params.yaml's, passed by nobody

    dvc = [sys.executable, "-m", "dvc", "repro", "--single-item", "synthesize"]
    run = subprocess.run(dvc, cwd=project, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    metrics = (project / "metrics/synthesis.json").read_bytes()
    assert json.loads(metrics).keys() == set(variants)
    sheet = (project / "reports/synthesis/samples.png").read_bytes()

    prefect = [sys.executable, "-m", "prefect"]
    run = subprocess.run(
        [*prefect, "work-pool", "create", "dag", "--type", "process"],
        cwd=project, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    run = subprocess.run(
        [*prefect, "--no-prompt", "deploy", "--all"],
        cwd=project, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "synthesize-dataset/default" in run.stdout

    worker_env = {**env, "DAG_PROJECT_DIR": str(project)}
    worker = _spawn(
        [*prefect, "worker", "start", "--pool", "dag", "--name", "pytest-worker"],
        worker_env,
        tmp_path / "worker.log",
        cwd=project,
    )
    seen: set[int] = set()
    try:
        cmd = [*prefect, "deployment", "run", "synthesize-dataset/default"]
        cmd += ["--watch", "--watch-interval", "1"]
        runner = subprocess.Popen(
            cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        while runner.poll() is None:  # note every process the worker starts (the flow run's)
            seen |= _descendants(worker.pid)
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.2)
        out = runner.stdout.read()  # type: ignore[union-attr]
        assert runner.returncode == 0, out[-3000:] + (tmp_path / "worker.log").read_text()[-3000:]
        assert "COMPLETED" in out.upper()
        assert seen, "the worker ran the flow in no subprocess"
    finally:
        code = _stop(worker, signal.SIGINT)
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, log[-3000:]
    assert "pytest-worker" in log
    assert not _alive(seen | {worker.pid}), "worker processes outlived `prefect worker start`"
    deployed = project / "data/synthetic-deployed"
    _same_bytes(project / "data/synthetic", deployed, variants)
    assert json.loads((deployed / "_metrics.json").read_text()).keys() == set(variants)
    assert (deployed / "_report/samples.png").is_file()

    served_log = tmp_path / "serve.log"
    server = _spawn(
        [sys.executable, "-m", "flows.synthesize", "--serve", "pytest-served",
         "out_dir=data/synthetic-served"],
        {**env, "PYTHONUNBUFFERED": "1"},
        served_log,
        cwd=project,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "pytest-served" not in served_log.read_text(errors="replace"):
            assert server.poll() is None, served_log.read_text()[-3000:]
            assert time.monotonic() < deadline, served_log.read_text()[-3000:]
            time.sleep(0.5)
        _run_deployment("synthesize-dataset/pytest-served", env, project, server)
    finally:
        _stop(server, signal.SIGINT)
    served = project / "data/synthetic-served"
    _same_bytes(project / "data/synthetic", served, variants)
    assert (served / "_metrics.json").read_bytes() == (deployed / "_metrics.json").read_bytes()
    # neither deployment wrote over the DVC run's metrics or report
    assert (project / "metrics/synthesis.json").read_bytes() == metrics
    assert (project / "reports/synthesis/samples.png").read_bytes() == sheet


@contextmanager
def _dask_cluster(
    tmp: Path, env: dict[str, str], allowed_failures: int | None = None
) -> Iterator[dict[str, Any]]:
    """``dask scheduler`` + two ``dask worker`` commands on loopback, one thread each."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(BIN / "dask")
    scheduler_env = dict(env)
    if allowed_failures is not None:
        scheduler_env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = str(allowed_failures)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    procs["scheduler"] = _spawn(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        scheduler_env,
        tmp / "scheduler.log",
    )
    try:
        for name in ("w1", "w2"):
            procs[name] = _spawn(
                [dask, "worker", address, "--name", name, "--nthreads", "1", "--nworkers", "1",
                 "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "60"],
                env,
                tmp / f"{name}.log",
            )  # fmt: skip
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield {"address": address, "procs": procs}
    finally:
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                _stop(proc, signal.SIGTERM, timeout=30)


def _kill_worker_mid_shard(tmp: Path, cluster: dict[str, Any], run: subprocess.Popen[str]) -> None:
    """SIGKILL worker w1's process group (nanny + worker: a machine lost) while it renders."""
    log = tmp / "w1.log"
    deadline = time.monotonic() + 300
    while True:  # a shard's progress bar has started in w1 and its shard is not written yet
        text = log.read_text(errors="replace")
        if text.count("  0%|") > text.count(" - wrote "):
            break
        assert run.poll() is None, run.stdout.read()  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    worker = cluster["procs"]["w1"]
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()


@pytest.fixture(scope="module")
def dask_reference(tmp_path_factory: pytest.TempPathFactory, api: str, models: dict[str, str]):
    """The local run every Dask run must equal. Dask workers run torch with one thread
    (OMP_NUM_THREADS=1 from the nanny), so the reference does too."""
    tmp = tmp_path_factory.mktemp("reference")
    env = {**_env(tmp, api), "OMP_NUM_THREADS": "1"}
    _finish(_local_run(tmp, env, _group(models, tmp / "local", **DASK_SIZE)))
    return tmp / "local"


DASK_SIZE = {"num_samples": 12, "shard_size": 4, "steps": 6}  # 3 shards per variant, ~1 s each


def test_external_dask_cluster_matches_local_and_survives_a_lost_worker(
    tmp_path: Path, env: dict[str, str], models: dict[str, str], dask_reference: Path
) -> None:
    with _dask_cluster(tmp_path, env) as cluster:
        runner = {"kind": "dask", "address": cluster["address"]}
        fanned = tmp_path / "fanned"
        _finish(_local_run(tmp_path, env, _group(models, fanned, task_runner=runner, **DASK_SIZE)))
        _same_bytes(dask_reference, fanned)
        for name in ("w1", "w2"):  # both worker commands rendered shards
            assert " - wrote " in (tmp_path / f"{name}.log").read_text(errors="replace")

        # A worker dies mid-shard: Dask reschedules its shard on w2 and the run finishes.
        lost = tmp_path / "lost"
        run = _local_run(tmp_path, env, _group(models, lost, task_runner=runner, **DASK_SIZE))
        _kill_worker_mid_shard(tmp_path, cluster, run)
        _finish(run)
        scheduler_log = (tmp_path / "scheduler.log").read_text()
        assert re.search(r"Remove worker addr: \S+ name: w1\b", scheduler_log)  # it saw w1 go
        _same_bytes(dask_reference, lost)


def test_lost_worker_without_retries_is_one_line_error_and_resumes(
    tmp_path: Path, env: dict[str, str], models: dict[str, str], dask_reference: Path
) -> None:
    # allowed-failures 0: a shard whose worker dies is not retried, so the run fails.
    with _dask_cluster(tmp_path, env, allowed_failures=0) as cluster:
        runner = {"kind": "dask", "address": cluster["address"]}
        out = tmp_path / "out"
        group = _group(models, out, task_runner=runner, **DASK_SIZE)
        run = _local_run(tmp_path, env, group)
        _kill_worker_mid_shard(tmp_path, cluster, run)
        log, _ = run.communicate(timeout=300)
        assert run.returncode == 1, log[-4000:]
        errors = [ln for ln in log.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1, log[-4000:]
        assert "KilledWorker" in errors[0] and "rerun the same command" in errors[0]
        kept = _digest(out / "dag")
        assert len(kept) < 3 and not (out / "dag" / "_manifest.json").exists()

        log = _finish(_local_run(tmp_path, env, group))  # same command, w2 still up
        assert "shards done" in log
        assert all(_digest(out / "dag")[name] == sha for name, sha in kept.items())
        _same_bytes(dask_reference, out)
