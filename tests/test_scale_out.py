"""Scale-out as users run it (README "Scale out"): real servers, real workers, real bytes.

* a Prefect **work pool**: ``prefect work-pool create --type process``, ``prefect deploy`` from
  prefect.yaml, a ``prefect worker start`` process and ``prefect deployment run
  'synthesize-dataset/default'`` write the same shard bytes as a local run, and the worker stops
  cleanly (none of its processes outlive it);
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
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
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


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
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


def test_work_pool_deployment_matches_local_run(
    tmp_path: Path, env: dict[str, str], models: dict[str, str]
) -> None:
    local = tmp_path / "local"
    group = _group(models, local)
    _finish(_local_run(tmp_path, env, group))

    prefect = [sys.executable, "-m", "prefect"]
    run = subprocess.run(
        [*prefect, "work-pool", "create", "dag", "--type", "process"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    run = subprocess.run(
        [*prefect, "--no-prompt", "deploy", "--all"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "synthesize-dataset/default" in run.stdout

    worker_env = {**env, "DAG_PROJECT_DIR": str(ROOT)}
    worker = _spawn(
        [*prefect, "worker", "start", "--pool", "dag", "--name", "pytest-worker"],
        worker_env,
        tmp_path / "worker.log",
    )
    seen: set[int] = set()
    try:
        deployed = tmp_path / "deployed"
        params = {**group, "out_dir": str(deployed)}
        cmd = [*prefect, "deployment", "run", "synthesize-dataset/default"]
        cmd += ["--params", json.dumps(params), "--watch", "--watch-interval", "1"]
        runner = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        while runner.poll() is None:  # note every process the worker starts (the flow run's)
            seen |= _descendants(worker.pid)
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.2)
        out = runner.stdout.read()  # type: ignore[union-attr]
        assert runner.returncode == 0, out[-3000:] + (tmp_path / "worker.log").read_text()[-3000:]
        assert "COMPLETED" in out.upper()
        _same_bytes(local, deployed)
        assert seen, "the worker ran the flow in no subprocess"
    finally:
        code = _stop(worker, signal.SIGINT)
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, log[-3000:]
    assert "pytest-worker" in log
    assert not _alive(seen | {worker.pid}), "worker processes outlived `prefect worker start`"


@pytest.fixture
def dask_cluster(tmp_path: Path, env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """``dask scheduler`` + two ``dask worker`` commands on loopback, one thread each."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(BIN / "dask")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    procs["scheduler"] = _spawn(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        env,
        tmp_path / "scheduler.log",
    )
    for name in ("w1", "w2"):
        procs[name] = _spawn(
            [dask, "worker", address, "--name", name, "--nthreads", "1", "--nworkers", "1",
             "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "60"],
            env,
            tmp_path / f"{name}.log",
        )  # fmt: skip
    try:
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield {"address": address, "procs": procs}
    finally:
        for name in ("w1", "w2", "scheduler"):
            with contextlib.suppress(subprocess.TimeoutExpired):
                _stop(procs[name], signal.SIGTERM, timeout=30)


def test_external_dask_cluster_matches_local_and_survives_a_lost_worker(
    tmp_path: Path, env: dict[str, str], models: dict[str, str], dask_cluster: dict[str, Any]
) -> None:
    # Dask workers run torch with one thread (OMP_NUM_THREADS=1 from the nanny): so does the
    # local reference, as it would on a one-thread-per-GPU or one-thread-per-core deployment.
    one_thread = {**env, "OMP_NUM_THREADS": "1"}
    local = tmp_path / "local"
    _finish(_local_run(tmp_path, one_thread, _group(models, local)))

    runner = {"kind": "dask", "address": dask_cluster["address"]}
    fanned = tmp_path / "fanned"
    _finish(_local_run(tmp_path, env, _group(models, fanned, task_runner=runner)))
    _same_bytes(local, fanned)
    logs = {n: (tmp_path / f"{n}.log").read_text() for n in ("w1", "w2")}
    assert all("Starting Worker" in text for text in logs.values())

    # A worker dies (SIGKILL of its whole process group, as a machine lost) mid-run.
    lost = tmp_path / "lost"
    proc = _local_run(tmp_path, env, _group(models, lost, task_runner=runner))
    deadline = time.monotonic() + 300
    while not (lost / "unguided" / "part-00000.parquet").exists():
        assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker = dask_cluster["procs"]["w1"]
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    out, _ = proc.communicate(timeout=300)
    (tmp_path / "lost-run.log").write_text(out)
    assert "name: w1" in (tmp_path / "scheduler.log").read_text()  # the scheduler saw it go
    if proc.returncode != 0:  # failed: one clear line, then a rerun resumes
        errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1, out[-4000:]
        proc = _local_run(tmp_path, env, _group(models, lost, task_runner=runner))
        out = _finish(proc)
    assert len(_digest(lost / "unguided")) == 6
    _same_bytes(local, lost)
