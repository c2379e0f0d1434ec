"""Benchmark: guided synthesis with 1 vs 2 Dask workers on CPU (prefect-dask task runner).

Same tiny church-layout models, same samples, shards fanned out as Prefect tasks; measured side
by side in one run against one real local Prefect server. Writes bench/results/dask.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.prefect_server import prefect_env, prefect_server  # noqa: E402
from tests.tiny_models import write_tiny_models  # noqa: E402

SAMPLES, SHARD, STEPS = 16, 2, 10


def run(tmp: Path, models: dict[str, str], env: dict[str, str], runner: dict) -> float:
    out = tmp / f"out-{runner['kind']}-{runner.get('n_workers', 1)}"
    group = {
        **models,
        "out_dir": str(out),
        "num_samples": SAMPLES,
        "batch_size": SHARD,
        "shard_size": SHARD,
        "steps": STEPS,
        "variants": {"dag": {}},
        "guidance": {"w_dc": 40.0, "w_dp": 40.0, "tau": 100},
        "task_runner": runner,
        "metrics_file": None,
        "report_dir": None,
    }
    params = tmp / f"{out.name}.yaml"
    params.write_text(yaml.safe_dump({"synthesize": group}))
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "flows.synthesize", "--params", str(params)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        models = write_tiny_models(tmp / "models")
        with prefect_server(tmp / "prefect") as api:
            env = prefect_env(tmp / "home", api)
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            one = run(tmp, models, env, {"kind": "dask", "n_workers": 1})
            two = run(tmp, models, env, {"kind": "dask", "n_workers": 2})
    result = {
        "samples": SAMPLES,
        "shards": SAMPLES // SHARD,
        "steps": STEPS,
        "cpu_count": os.cpu_count(),
        "seconds_1_worker": round(one, 1),
        "seconds_2_workers": round(two, 1),
        "speedup_2_over_1": round(one / two, 2),
        "note": "wall time of the whole flow process, including Dask cluster start-up",
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "dask.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"dask synthesis: 1 worker {one:.1f}s, 2 workers {two:.1f}s, speedup {one / two:.2f}x")
    return result


if __name__ == "__main__":
    main()
