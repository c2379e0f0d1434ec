"""Benchmark: guided synthesis with 1 vs 2 Dask workers on CPU (prefect-dask task runner).

Same tiny church-layout models, same samples (≥ 256 by default, so the cluster's start-up is
amortised), shards fanned out as Prefect tasks on a ``distributed.LocalCluster`` with one thread
per worker; measured side by side in one run against one real local Prefect server. The figure
is the wall time of the whole ``python -m flows.synthesize`` process, start-up included.

The two cores must be quiet for the ratio to mean anything: the load average before and after
and the CPU time spent outside the benchmarked flow process during each run are recorded, and
``quiet_machine`` is false when other work was running. Writes bench/results/dask.json
(``--out`` elsewhere; ``--samples 32`` for a quick smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.prefect_server import prefect_env, prefect_server  # noqa: E402
from tests.tiny_models import write_tiny_models  # noqa: E402

SAMPLES, SHARD, STEPS = 256, 16, 20


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def _children_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(
    tmp: Path, models: dict[str, str], env: dict[str, str], workers: int, samples: int
) -> dict[str, float]:
    out = tmp / f"out-{workers}"
    group = {
        **models,
        "out_dir": str(out),
        "num_samples": samples,
        "batch_size": SHARD,
        "shard_size": SHARD,
        "steps": STEPS,
        "variants": {"dag": {}},
        "guidance": {"w_dc": 40.0, "w_dp": 40.0, "tau": 100},
        "task_runner": {"kind": "dask", "n_workers": workers},
        "metrics_file": None,
        "report_dir": None,
    }
    params = tmp / f"{out.name}.yaml"
    params.write_text(yaml.safe_dump({"synthesize": group}))
    busy, ours = _busy_seconds(), _children_seconds()
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "flows.synthesize", "--params", str(params)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    flow_cpu = _children_seconds() - ours
    other = max(0.0, _busy_seconds() - busy - flow_cpu)
    return {
        "seconds": round(wall, 1),
        "flow_cpu_s": round(flow_cpu, 1),
        "other_cpu_s": round(other, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dask.json")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        models = write_tiny_models(tmp / "models")
        with prefect_server(tmp / "prefect") as api:
            env = prefect_env(tmp / "home", api)
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            one = run(tmp, models, env, 1, args.samples)
            two = run(tmp, models, env, 2, args.samples)
    load_after = os.getloadavg()
    total_other = one["other_cpu_s"] + two["other_cpu_s"]
    total_wall = one["seconds"] + two["seconds"]
    # Other work took more than a tenth of one core on average: the ratio is not a clean figure.
    quiet = load_before[0] < 0.5 and total_other < 0.1 * total_wall
    result = {
        "samples": args.samples,
        "shards": -(-args.samples // SHARD),
        "steps": STEPS,
        "model": "tiny church-256-layout U-Net at 32², DCG + DPG every step (tests/tiny_models.py)",
        "threads_per_worker": 1,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "seconds_1_worker": one["seconds"],
        "seconds_2_workers": two["seconds"],
        "speedup": round(one["seconds"] / two["seconds"], 2),
        "runs": {"1_worker": one, "2_workers": two},
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "quiet_machine": quiet,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": (
            "wall time of the whole flow process, Dask cluster start-up included; other_cpu_s is "
            "CPU time the machine spent outside the flow process during the run (the Prefect "
            "server and any other job)"
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"dask synthesis, {args.samples} samples: 1 worker {one['seconds']:.1f}s, "
        f"2 workers {two['seconds']:.1f}s, speedup {result['speedup']:.2f}x "
        f"(load before {load_before[0]:.2f}, quiet={quiet})"
    )
    return result


if __name__ == "__main__":
    main()
