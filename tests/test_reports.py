"""The exact bytes of the evaluation stages' outputs (dFID metrics JSON, downstream metrics JSON
and Markdown table, sweep CSVs) on fixed inputs, pinned against golden files in ``tests/golden``.

The scores come from fakes, so only the assembly, run averaging, formatting and writing are
under test: a refactor of those must leave every byte as it was.
Set ``DAG_WRITE_GOLDEN=1`` to rewrite the golden files (only when a change of output is meant).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dag_core.downstream.evaluation as downstream_evaluation
import dag_core.metrics.comparison as comparison
import dag_core.sweep as sweep_core
import tasks.downstream as downstream_tasks
import tasks.evaluation as evaluation
import tasks.sweep as sweep

GOLDEN = Path(__file__).resolve().parent / "golden"


def check_golden(path: Path, name: str) -> None:
    """``path``'s bytes equal ``tests/golden/<name>`` (rewritten with DAG_WRITE_GOLDEN=1)."""
    golden = GOLDEN / name
    if os.environ.get("DAG_WRITE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(path.read_bytes())
    assert path.read_bytes() == golden.read_bytes(), f"{path} differs from {golden}"


# --- fakes ----------------------------------------------------------------------------------


class FakeSet:
    """Stands for a GeneratedSet: a tag and a sample count."""

    def __init__(self, tag: float, n: int) -> None:
        self.tag, self.n = tag, n


class FakeScorer:
    """Stands for a Scorer: every number is a fixed function of the sets' tags."""

    n_real = 12
    real_source = "computed"

    def __init__(self, n_boot: int = 20) -> None:
        self.n_boot = n_boot

    def features(self, rgb: np.ndarray, depth: np.ndarray | None = None) -> FakeSet:
        return FakeSet(float(rgb.reshape(len(rgb), -1)[:, 0].mean()) / 7.0, len(rgb))

    def summary(self, gen: FakeSet, against: FakeSet | None = None) -> tuple[dict, dict | None]:
        t = gen.tag
        row = {
            "n": gen.n,
            "dfid": 10 + t,
            "dfid_ci_lo": 9 + t,
            "dfid_ci_hi": 11.5 + t,
            "fid": 100 / (1 + t),
            "fid_ci_lo": 90 / (1 + t),
            "fid_ci_hi": 110 / (1 + t),
            "kid_mean": t / 3,
            "depth_kid_mean": t / 9,
            "precision": 0.5,
            "recall": 1 / 3,
            "labels_nonfinite": 0,
            "consistency_abs_rel": 0.2 + t / 100,
            "consistency_abs_rel_ci_lo": 0.1 + t / 100,
            "consistency_abs_rel_ci_hi": 0.3 + t / 100,
            "consistency_delta1": 0.7,
        }
        if against is None:
            return row, None
        d = t - against.tag
        diff = {
            "dfid_diff": d,
            "dfid_diff_ci_lo": d - 1,
            "dfid_diff_ci_hi": d + 1,
            "dfid_rel_change": d / 10,
            "dfid_verdict": "no difference",
            "fid_diff": -d,
            "fid_diff_ci_lo": -d - 2,
            "fid_diff_ci_hi": -d + 2,
            "fid_verdict": "no difference",
            "consistency_abs_rel_diff": d / 100,
            "consistency_abs_rel_diff_ci_lo": d / 100 - 0.01,
            "consistency_abs_rel_diff_ci_hi": d / 100 + 0.01,
            "consistency_abs_rel_verdict": "higher" if d > 0 else "no difference",
        }
        return row, diff

    def gap(self, gen: FakeSet, floor: FakeSet) -> dict[str, float]:
        return {"dfid_gap": gen.tag - floor.tag, "fid_gap_rel": (gen.tag - floor.tag) / 3}


def fake_pairs(value: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 2×2 images whose first pixel is ``value + i``, and depth labels."""
    rgb = np.zeros((n, 2, 2, 3), dtype=np.uint8)
    rgb[:, 0, 0, 0] = value + np.arange(n)
    return rgb, np.ones((n, 2, 2), dtype=np.float32)


# --- dfid -----------------------------------------------------------------------------------


def _patch_dfid(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"unguided": 3, "dag": 20, "floor": 50}

    def read_arrays(directory: str | Path, limit: int | None = None, *, depth: bool = True):
        rgb, labels = fake_pairs(data[Path(directory).name], 6)
        rgb, labels = rgb[:limit], labels[:limit]
        return rgb, (labels if depth else None)

    monkeypatch.setattr(evaluation, "read_arrays", read_arrays)
    monkeypatch.setattr(comparison, "read_arrays", read_arrays)
    monkeypatch.setattr(evaluation, "load_scorer", lambda *a, **kw: FakeScorer(n_boot=a[4]))
    monkeypatch.setattr(evaluation, "resolve_extractor", lambda name: f"resolved-{name}")


@pytest.mark.parametrize(
    ("reference", "floor", "golden"),
    [("unguided", "floor", "dfid.json"), (None, None, "dfid_noref.json")],
)
def test_dfid_metrics_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference, floor, golden
) -> None:
    _patch_dfid(monkeypatch)
    monkeypatch.chdir(tmp_path)  # the record names the floor folder as given: keep it relative
    out = tmp_path / "metrics" / "dfid.json"
    evaluation.compute_dfid.fn(
        str(tmp_path / "synthetic"),
        ["unguided", "dag"],
        "real",
        "estimator",
        "auto",
        4,
        5,
        20,
        reference,
        str(out),
        {"device": "cpu"},
        floor,
    )
    check_golden(out, golden)


# --- downstream -----------------------------------------------------------------------------

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")


class FakeAccumulator:
    """Stands for a DepthMetricAccumulator: per-image metrics drawn from a fixed seed."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.rows = {m: rng.uniform(0.1, 0.9, 9) for m in METRICS}

    def per_image(self) -> dict[str, np.ndarray]:
        return self.rows

    def compute(self) -> dict[str, float]:
        return {**{m: float(v.mean()) for m, v in self.rows.items()}, "count": 9}


class FakeNet:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def to(self, device: Any) -> FakeNet:
        return self


def _patch_downstream(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    seeds = {"labelled": 1, "unguided": 2, "dag": 3, "labelled+dag": 4, "labelled+dag@100": 5}

    def load(directory: str):
        return FakeNet(directory), SimpleNamespace(resolution=8), None

    def per_image(model: FakeNet, pairs: Any, norm: Any, resolution: int, **kw: Any):
        name, run = Path(model.directory).parent.name, Path(model.directory).name
        return FakeAccumulator(seeds[name] * 100 + int(run[-1]) * 10 + len(kw))

    def info(model_dir: str) -> dict[str, Any]:
        name = Path(model_dir).parent.name
        return {
            "data": f"data/{name}",
            "regime": "finetune" if "+" in name else "alone",
            "labels": "stored",
            "pairs": 100 if "@" in name else 192,
            "limit": 100 if "@" in name else None,
            "drop_uncertain": 0.0,
        }

    monkeypatch.setattr(downstream_evaluation, "load_depth_net", load)
    monkeypatch.setattr(downstream_evaluation, "evaluate_per_image", per_image)
    monkeypatch.setattr(downstream_tasks, "_world_test_pairs", lambda directory: ["world"])
    monkeypatch.setattr(downstream_tasks, "open_nyu", lambda path: ["nyu"])
    monkeypatch.setattr(downstream_tasks, "_set_info", info)


@pytest.mark.parametrize(("runs", "nyu"), [(2, "nyu"), (1, None)])
def test_downstream_metrics_and_table_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runs: int, nyu: str | None
) -> None:
    _patch_downstream(monkeypatch)
    names = ("labelled", "unguided", "dag", "labelled+dag", "labelled+dag@100")
    models = {name: [f"models/{name}/seed-{s}" for s in range(runs)] for name in names}
    metrics, table = tmp_path / "downstream.json", tmp_path / "downstream.md"
    curve_dir = tmp_path / "curves"
    downstream_tasks.evaluate_training_nets.fn(
        models,
        "world_test",
        nyu,
        True,
        [["dag", "unguided"], ["labelled+dag", "labelled"]],
        ["dag", "labelled"],
        {"labelled+dag": {100: "labelled+dag@100", 192: "labelled+dag"}},
        50,
        str(metrics),
        str(table),
        str(curve_dir),
        {"device": "cpu"},
    )
    check_golden(metrics, f"downstream_runs{runs}.json")
    check_golden(table, f"downstream_runs{runs}.md")
    check_golden(curve_dir / "labelled+dag.csv", f"downstream_curve_runs{runs}.csv")


# --- sweep ----------------------------------------------------------------------------------


def _patch_sweep(monkeypatch: pytest.MonkeyPatch, figures: list) -> None:
    from dag_core.runtime import RuntimeConfig

    tags = iter(range(1, 100))

    def render_shard(models, spec, name, shard, directory, **kw):
        path = Path(directory) / "part-00000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "tag").write_text(str(0 if name == "w0" else next(tags) * 7))
        return path

    def read_arrays(directory: str | Path, limit: int | None = None, *, depth: bool = True):
        value = int((Path(directory) / "tag").read_text())
        return fake_pairs(value, 4)

    monkeypatch.setattr(sweep, "use_runtime", lambda rt: (RuntimeConfig(device="cpu"), "cpu"))
    monkeypatch.setattr(sweep, "cached_models", lambda *a: None)
    monkeypatch.setattr(sweep_core, "render_shard", render_shard)
    monkeypatch.setattr(sweep_core, "write_manifest", lambda directory: {})
    monkeypatch.setattr(sweep, "read_arrays", read_arrays)
    monkeypatch.setattr(sweep, "read_floor", lambda floor, n, stage: fake_pairs(200, n))
    monkeypatch.setattr(sweep, "load_scorer", lambda **kw: FakeScorer())
    monkeypatch.setattr(sweep, "sweep_figure", lambda series, path: figures.append(series))


def test_sweep_csv_bytes_and_stale_csvs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures: list = []
    _patch_sweep(monkeypatch, figures)
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "stale_0-1.csv").write_text("old\n")
    (out / "notes.txt").write_text("kept\n")
    sweep.guidance_sweep.fn(
        models={"base_model": "b", "heads": "h", "prior": "p"},
        evaluation={"real": "r", "estimator": "e", "extractor": "auto", "batch_size": 4},
        sampling={"num_samples": 4, "batch_size": 2, "seed": 1, "sampler": "ddim", "steps": 2},
        guidance={"tau": "random", "window": [0.0, 1.0]},
        modes=["paper", "mean"],
        scales={"paper": [40, 5], "mean": [100]},
        windows=[[0.0, 1.0], [0.0, 0.5]],
        out_dir=str(out),
        figure=str(tmp_path / "sweep.png"),
        runtime={"device": "cpu"},
        remedies={"dpg-only": {"scales": [40], "guidance": {"w_dc": 0}}},
        floor="floor",
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "dpg-only.csv",
        "mean_0-0.5.csv",
        "mean_0-1.csv",
        "notes.txt",
        "paper_0-0.5.csv",
        "paper_0-1.csv",
    ]
    for name in names:
        if name.endswith(".csv"):
            check_golden(out / name, f"sweep/{name}")
    assert len(figures) == 1
    assert list(figures[0]) == ["paper_0-1", "paper_0-0.5", "mean_0-1", "mean_0-0.5", "dpg-only"]


def test_sweep_resumes_point_by_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep stopped after 3 points keeps them (in ``.sweep.resume``); the rerun renders only
    the other points and writes the CSVs of an uninterrupted run, then removes the folder."""
    _patch_sweep(monkeypatch, [])
    tags: dict[str, int] = {}  # a point's samples depend on its name only, as real ones do
    calls: list[str] = []
    stop_after: list[int] = []

    def render_shard(
        models: Any, spec: Any, name: str, shard: int, directory: str | Path, **kw: Any
    ) -> Path:
        if stop_after and len(calls) == stop_after[0]:
            raise KeyboardInterrupt
        calls.append(name)
        path = Path(directory) / "part-00000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        tag = 0 if name == "w0" else tags.setdefault(name, 7 * (len(tags) + 1))
        (path.parent / "tag").write_text(str(tag))
        return path

    monkeypatch.setattr(sweep_core, "render_shard", render_shard)

    def run(out: Path) -> None:
        sweep.guidance_sweep.fn(
            models={"base_model": "b", "heads": "h", "prior": "p"},
            evaluation={"real": "r", "estimator": "e", "extractor": "auto", "batch_size": 4},
            sampling={"num_samples": 4, "batch_size": 2, "seed": 1, "sampler": "ddim", "steps": 2},
            guidance={"tau": "random", "window": [0.0, 1.0]},
            modes=["paper"],
            scales={"paper": [40, 5, 1]},
            windows=[[0.0, 1.0], [0.0, 0.5]],
            out_dir=str(out),
            figure=None,
            runtime={"device": "cpu"},
        )

    run(tmp_path / "clean")
    every = list(calls)
    assert len(every) == 7  # w0 + 3 scales x 2 windows
    calls.clear()
    stop_after.append(3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    assert len(list((tmp_path / ".resumed.resume").glob(".*.done.json"))) == 3
    stop_after.clear()
    calls.clear()
    run(tmp_path / "resumed")
    assert calls == every[3:]  # only the points the stopped run had not rendered
    assert not (tmp_path / ".resumed.resume").exists()
    for csv in sorted((tmp_path / "clean").iterdir()):
        assert (tmp_path / "resumed" / csv.name).read_bytes() == csv.read_bytes(), csv.name
