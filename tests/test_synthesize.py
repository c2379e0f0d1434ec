"""Stage ``synthesize`` end to end: real processes, a real Prefect server, real Parquet shards.

Covers: resume after ``kill -9`` gives bytes identical to an uninterrupted run; the same shards
fanned out over a 2-worker Dask cluster give the same samples; the Prefect deployment
``synthesize-dataset`` run through ``prefect deployment run``; bad input leaves shards untouched.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from dag_core.shards import read_samples, verify_dataset
from tests.prefect_server import prefect_env
from tests.tiny_models import write_tiny_models

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_tiny_models(tmp_path_factory.mktemp("models"))


def _params(tmp: Path, models: dict[str, str], out: Path, **over: object) -> Path:
    group = {
        **models,
        "out_dir": str(out),
        "num_samples": 8,
        "batch_size": 2,
        "shard_size": 2,
        "seed": 7,
        "sampler": "ddim",
        "steps": 4,
        "guidance": {"w_dc": 40.0, "w_dp": 40.0, "tau": 100},
        "variants": {"unguided": {"w_dc": 0.0, "w_dp": 0.0}, "dag": {}},
        "metrics_file": str(out.parent / f"{out.name}-metrics.json"),
        "report_dir": None,
        **over,
    }
    path = tmp / f"params-{out.name}.yaml"
    path.write_text(yaml.safe_dump({"synthesize": group}))
    return path


def _run(params: Path, env: dict[str, str], **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.synthesize", "--params", str(params)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **kw,  # type: ignore[arg-type]
    )


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.glob("part-*.parquet"))
    }


def test_resume_after_kill_is_byte_identical_and_dask_matches(
    tmp_path: Path, api: str, models: dict[str, str]
) -> None:
    env = prefect_env(tmp_path / "home", api)
    clean = tmp_path / "clean"
    proc = _run(_params(tmp_path, models, clean), env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode()[-3000:]

    crashed = tmp_path / "crashed"
    params = _params(tmp_path, models, crashed)
    proc = _run(params, env)
    deadline = time.monotonic() + 600
    while not (crashed / "dag" / "part-00001.parquet").exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(_digest(crashed / "dag")) < 4  # killed mid-variant

    proc = _run(params, env)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log.decode()[-3000:]
    assert "shards done" in log.decode()
    for variant in ("unguided", "dag"):
        assert _digest(crashed / variant) == _digest(clean / variant)
        assert verify_dataset(crashed / variant)["total_rows"] == 8
    ids = [s.id for s in read_samples(crashed / "dag", columns=["seed"])]
    assert ids == [f"dag-{i:08d}" for i in range(8)]  # no lost or duplicated rows
    dag = list(read_samples(crashed / "dag"))
    unguided = list(read_samples(crashed / "unguided"))
    assert [s.seed for s in dag] == [s.seed for s in unguided]  # same seeds, paired sets
    assert dag[0].meta["guidance"]["w_dc"] == 40.0
    assert set(dag[0].meta["hashes"]) == {"base_model", "heads", "prior"}
    assert any((a.rgb != b.rgb).any() for a, b in zip(dag, unguided, strict=True))

    # Shards fanned out over 2 Dask worker processes give the same samples. (Workers run torch
    # with one thread, so float reductions may differ in the last bit: compare pixels, not bytes.)
    fanned = tmp_path / "dask"
    proc = _run(
        _params(tmp_path, models, fanned, task_runner={"kind": "dask", "n_workers": 2}), env
    )
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out.decode()[-3000:]
    for variant in ("unguided", "dag"):
        a, b = list(read_samples(clean / variant)), list(read_samples(fanned / variant))
        assert [s.id for s in a] == [s.id for s in b] and [s.seed for s in a] == [s.seed for s in b]
        for x, y in zip(a, b, strict=True):
            assert np.abs(x.rgb.astype(int) - y.rgb.astype(int)).max() <= 2


def test_bad_scale_is_one_line_error_and_keeps_shards(
    tmp_path: Path, api: str, models: dict[str, str]
) -> None:
    env = prefect_env(tmp_path / "home", api)
    out = tmp_path / "synth"
    only_unguided = {"unguided": {"w_dc": 0.0, "w_dp": 0.0}}
    proc = _run(_params(tmp_path, models, out, num_samples=2, variants=only_unguided), env)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log.decode()[-3000:]
    before = _digest(out / "unguided")
    bad = _params(tmp_path, models, out, guidance={"w_dc": -1.0, "w_dp": 40.0})
    proc = _run(bad, env)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 2
    errors = [ln for ln in log.decode().splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "-1.0" in errors[0]
    assert _digest(out / "unguided") == before
    missing = _params(tmp_path, models, out, heads=str(tmp_path / "no-heads"))
    proc = _run(missing, env)
    log, _ = proc.communicate(timeout=600)
    errors = [ln for ln in log.decode().splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "no-heads" in errors[0]
    assert _digest(out / "unguided") == before
    only_dag = _params(tmp_path, models, out, num_samples=2, variants={"dag": {}})
    proc = _run(only_dag, env)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log.decode()[-3000:]
    assert "also holds variant folders this run did not write: unguided" in log.decode()
    assert _digest(out / "unguided") == before  # named, never deleted


def test_deployment_run_against_local_server(
    tmp_path: Path, api: str, models: dict[str, str]
) -> None:
    env = prefect_env(tmp_path / "home", api)
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.synthesize", "--serve", "pytest"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out = tmp_path / "deployed"
    try:
        args = [
            f"base_model={models['base_model']}",
            f"heads={models['heads']}",
            f"prior={models['prior']}",
            f"out_dir={out}",
            "num_samples=4",
            "batch_size=2",
            "shard_size=2",
            "steps=3",
            "metrics_file=null",
            "report_dir=null",
            'variants={"unguided": {"w_dc": 0, "w_dp": 0}, "dag": {}}',
        ]
        cmd = [sys.executable, "-m", "prefect", "deployment", "run", "synthesize-dataset/pytest"]
        for a in args:
            cmd += ["--param", a]
        deadline = time.monotonic() + 180
        while True:  # the deployment exists once `serve` has registered it
            run = subprocess.run([*cmd, "--watch"], env=env, capture_output=True, text=True)
            if run.returncode == 0 or time.monotonic() > deadline:
                break
            assert serve.poll() is None, serve.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
            time.sleep(2)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "COMPLETED" in (run.stdout + run.stderr).upper()
        for variant in ("unguided", "dag"):
            assert verify_dataset(out / variant)["total_rows"] == 4
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
