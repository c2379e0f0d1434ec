"""The labeller record: labeller specs, test-time averaged labels, the record and its resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dag_core.backbone import load_base_model
from dag_core.configs.downstream import DownstreamConfig
from dag_core.configs.labeller import LabellerSpec
from dag_core.depthnorm import DepthNorm
from dag_core.errors import DagError
from dag_core.heads import HeadConfig
from dag_core.heads.labelling import average_label
from dag_core.labeller import fit_steps, labeller_record
from dag_core.results.labellers import labellers_table
from dag_core.sampling import final_label
from dag_core.shards import write_dataset
from dag_core.sources import WorldSource
from tests.tiny_models import tiny_heads, write_tiny_models


def test_spec_kinds_and_one_line_errors() -> None:
    spec = LabellerSpec.parse("a", {"heads": True, "t": [0, 50], "draws": 2}, "models/heads")
    assert (spec.kind, spec.heads, spec.t, spec.draws, spec.fitted) == (
        "heads",
        "models/heads",
        (0, 50),
        2,
        False,
    )
    fit = LabellerSpec.parse("b", {"fit": {"strong_blocks": [8, 9]}}, "h")
    assert fit.kind == "fit" and fit.config == {"strong_blocks": [8, 9]} and fit.fitted
    assert LabellerSpec.parse("c", {"net": None}, "h").config == {}
    bad = [
        ({}, "exactly one of heads, fit, net"),
        ({"heads": True, "net": {}}, "exactly one"),
        ({"net": {}, "t": [5]}, "not to a depth net"),
        ({"heads": "models/heads"}, "heads must be true"),
        ({"fit": {}, "draws": 0}, "draws >= 1"),
        ({"fit": [1]}, "fit must be a mapping"),
        ({"fit": {}, "seed": 1}, "got ['fit', 'seed']"),
    ]
    for value, message in bad:
        with pytest.raises(DagError, match=message.replace("[", r"\[").replace("]", r"\]")):
            LabellerSpec.parse("x", value, "h")


def test_fit_steps_cover_min_epochs() -> None:
    assert fit_steps(2000, 6, 100, 10) == 2000  # 100 pairs: the config's steps already do
    assert fit_steps(2000, 6, 3000, 10) == 5000  # 3000 pairs seen 10 times on average
    assert fit_steps(800, 16, 3000, 0) == 800


def test_average_label_at_t0_is_the_synthesis_label(unet, scheduler) -> None:
    heads = tiny_heads(unet, resolution=32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    stored, _ = final_label(unet, heads, x)
    assert torch.equal(average_label(unet, scheduler, heads, x), stored)
    tta = average_label(unet, scheduler, heads, x, t_values=(0, 300), draws=2, seed=1)
    again = average_label(unet, scheduler, heads, x, t_values=(0, 300), draws=2, seed=1)
    assert torch.equal(tta, again) and not torch.equal(tta, stored)
    assert tta.shape == stored.shape and bool((tta > 0).all())
    with pytest.raises(DagError, match=r"label timestep\(s\) \[1000\] out of range 0..999"):
        average_label(unet, scheduler, heads, x, t_values=(1000,))


def _world(path: Path, n: int, seed_base: int) -> str:
    source = WorldSource(32, size=n, seed_base=seed_base)
    write_dataset(path, (source[i] for i in range(n)), shard_size=4)
    return str(path)


def test_record_scores_every_labeller_and_resumes(tmp_path: Path) -> None:
    models = write_tiny_models(tmp_path / "models")
    base = load_base_model(models["base_model"])
    train = _world(tmp_path / "labelled/train", 6, 0)
    heldout = _world(tmp_path / "labelled/heldout", 4, 100)
    test = _world(tmp_path / "test", 5, 200)
    specs = {
        "heads": LabellerSpec.parse("heads", {"heads": True}, models["heads"]),
        "fit-s": LabellerSpec.parse("fit-s", {"fit": {"strong_blocks": [8, 9]}}, ""),
        "scratch": LabellerSpec.parse("scratch", {"net": {}}, ""),
    }
    kwargs = dict(
        ceiling_runs=2,
        base=base,
        base_model=models["base_model"],
        train=train,
        validation=heldout,
        test=test,
        head_config=HeadConfig(hidden=(16,), time_dim=8, steps=2, batch_size=2),
        net_config=DownstreamConfig(channels=(8, 16), steps=3, batch_size=2, validate_every=2),
        norm=DepthNorm(),
        reference="heads",
        runs=2,
        ceiling_n=[4],
        ceiling_labellers=["fit-s", "scratch"],
        min_epochs=1.0,
        n_boot=50,
        work=tmp_path / "work",
    )
    logs: list[str] = []
    record, times = labeller_record(specs, log=logs.append, **kwargs)
    assert record["test"] == {"path": test, "count": 5} and record["runs"] == 2
    rows = record["labellers"]
    assert list(rows) == ["heads", "fit-s", "scratch"]
    assert [rows[n]["runs"] for n in rows] == [1, 2, 2] and times["heads"] == 0
    for row in rows.values():
        assert row["abs_rel_ci_lo"] <= row["abs_rel"] <= row["abs_rel_ci_hi"]
    diffs = {r["set"]: r for r in record["comparisons"]}
    assert set(diffs) == {"fit-s", "scratch"} and {r["reference"] for r in diffs.values()} == {
        "heads"
    }
    assert diffs["scratch"]["abs_rel_diff"] == pytest.approx(
        rows["scratch"]["abs_rel"] - rows["heads"]["abs_rel"]
    )
    assert set(times) == {*rows, "fit-s@4", "scratch@4"} and times["scratch"] > 0
    assert [(r["labeller"], r["n"], r["runs"]) for r in record["ceiling"]] == [
        ("fit-s", 4, 2),
        ("scratch", 4, 2),
    ]
    fitted = [line for line in logs if line.startswith("labeller ")]
    assert len(fitted) == 1 + 2 + 2 + 2 + 2  # heads once; two runs of each fit, twice for N
    # the two runs differ (seeds + run), and the record keeps each run's per-image metrics
    runs = [
        np.load(tmp_path / f"work/fit-s-nlabelled-run{r}/per_image.npz")["abs_rel"] for r in (0, 1)
    ]
    assert not np.array_equal(*runs)
    table = labellers_table(record, times)
    assert "| fit-s | fit |" in table and "| scratch | 4 |" in table and "(reference)" in table

    logs.clear()  # a rerun keeps every finished unit: nothing is fitted again, same record
    assert labeller_record(specs, log=logs.append, **kwargs) == (record, times)
    assert not [line for line in logs if line.startswith("labeller ")]
    json.dumps(record)  # the record is plain JSON


def test_bad_labeller_params_name_the_key() -> None:
    from flows._params import stage_defaults
    from flows.schema.stages import validate_stage

    d = stage_defaults("labellers")
    ceiling = {"n": [10], "labellers": ["zz"], "min_epochs": 1, "runs": 1}
    cases = [
        ({"reference": "nope"}, r"labellers\.reference names unknown labeller\(s\) \['nope'\]"),
        ({"ceiling": ceiling}, r"labellers\.ceiling names unknown labeller\(s\) \['zz'\]"),
        (
            {"labellers": {"x": {"fit": {"steps": 0}}}, "reference": "x"},
            r"labellers\.labellers\.x\.fit\.steps=0: must be >= 1",
        ),
        (
            {"labellers": {"x": {"net": {"loss": "l2"}}}, "reference": "x"},
            r"labellers\.labellers\.x\.net\.loss='l2': expected one of",
        ),
        (
            {"labellers": {"x": {"nets": {}}}, "reference": "x"},
            r"labellers\.labellers\.x: labeller 'x' needs exactly one of heads, fit, net",
        ),
        ({"runs": 0}, r"labellers\.runs=0: must be >= 1"),
    ]
    for change, match in cases:
        with pytest.raises(DagError, match=match):
            validate_stage("labellers", {**d, **change}, files=False)
