"""params.yaml is the one place for every default: complete, and everything else agrees with it.

Flow signatures, the library's settings classes, prefect.yaml's deployments and every profile
are compared with params.yaml (or checked against the stage schemas), so a default that drifts
fails here.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from dag_core.backbone import TrainConfig
from dag_core.configs.runtime import RuntimeSettings
from dag_core.configs.synthesis import SynthesisSpec
from dag_core.depthnorm import DepthNorm
from dag_core.downstream import DownstreamConfig
from dag_core.guidance import GuidanceConfig
from dag_core.heads import HeadConfig
from dag_core.prior import PriorConfig
from flows._params import changed, stage_defaults
from flows.schema.stages import SCHEMAS, validate_stage
from flows.schema.sweep import POINT_KEYS
from flows.schema.task_runner import TaskRunnerConfig

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
PROFILES = sorted(p.name for p in (ROOT / "profiles").glob("*.yaml"))


def _complete(data: dict[str, Any], where: str) -> list[str]:
    """Every stage group lists every parameter, every nested group every field."""
    problems = []
    for stage, group in data.items():
        if stage not in SCHEMAS:
            continue
        schema = SCHEMAS[stage]
        if set(group) != set(schema.model_fields):
            problems.append(f"{where} {stage}: {sorted(set(schema.model_fields) ^ set(group))}")
        for name, cls in schema.nested().items():
            want = {f.name for f in fields(cls)}
            if set(group.get(name) or {}) != want:
                problems.append(f"{where} {stage}.{name}: {sorted(want ^ set(group[name]))}")
        if stage == "sweep":  # every shared field; each point sets the others
            want = {f.name for f in fields(GuidanceConfig)} - set(POINT_KEYS)
            if set(group["guidance"]) != want:
                problems.append(f"{where} sweep.guidance: {sorted(want ^ set(group['guidance']))}")
    return problems


@pytest.mark.parametrize("name", ["params.yaml", *(f"profiles/{p}" for p in PROFILES)])
def test_every_params_file_is_complete_and_valid(name: str) -> None:
    data = yaml.safe_load((ROOT / name).read_text())
    assert not _complete(data, name)
    for stage, group in data.items():
        if stage in SCHEMAS:
            validate_stage(stage, group, files=False)
    if name == "params.yaml" or "depth_norm" in data:  # a complete params file: every stage
        assert set(SCHEMAS) <= set(data), sorted(set(SCHEMAS) - set(data))


def test_flow_signatures_take_their_defaults_from_params_yaml() -> None:
    """Each flow's parameters are its schema's fields, and each default is params.yaml's."""
    for stage, schema in SCHEMAS.items():
        fn = getattr(importlib.import_module(f"flows.{stage}"), stage)
        sig = inspect.signature(fn.fn)
        assert set(sig.parameters) == set(schema.model_fields), stage
        defaults = {k: p.default for k, p in sig.parameters.items()}
        assert defaults == PARAMS[stage], stage
        # a run cannot change the defaults of the next: the flow works on a checked deep copy
        checked = validate_stage(stage, defaults, files=False)
        for value in checked.values():
            if isinstance(value, dict):
                value["mutated"] = True
        assert {k: p.default for k, p in sig.parameters.items()} == PARAMS[stage], stage
    assert stage_defaults("synthesize") is not stage_defaults("synthesize")


@pytest.mark.parametrize(
    ("cls", "group"),
    [
        (GuidanceConfig, PARAMS["synthesize"]["guidance"]),
        (TaskRunnerConfig, PARAMS["synthesize"]["task_runner"]),
        (HeadConfig, PARAMS["train_heads"]["config"]),
        (PriorConfig, PARAMS["train_prior"]["config"]),
        (DownstreamConfig, PARAMS["downstream"]["config"]),
        (DownstreamConfig, PARAMS["reference"]["config"]),
        (TrainConfig, PARAMS["base_model"]["train"]),
        (RuntimeSettings, PARAMS["runtime"]),
        (DepthNorm, PARAMS["depth_norm"]),
    ],
)
def test_library_defaults_are_params_yaml(cls: type, group: dict[str, Any]) -> None:
    """A settings class built with no arguments is exactly params.yaml's group."""
    assert cls().to_dict() == group


def test_synthesis_spec_defaults_are_params_yaml() -> None:
    spec = SynthesisSpec(num_samples=1, shard_size=1, variants={"dag": {}})
    synth = PARAMS["synthesize"]
    for name in ("seed", "sampler", "steps", "eta", "depth_dtype"):
        assert getattr(spec, name) == synth[name], name


def test_prefect_deployments_differ_from_params_yaml_only_on_purpose() -> None:
    """Every parameter a deployment sets is a real flow parameter, and only ``out_dir`` differs
    from params.yaml (the rest comes from the flow's signature, i.e. params.yaml)."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert spec["deployments"]
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        stage = Path(path).stem
        fn = getattr(importlib.import_module(f"flows.{stage}"), name)
        params = deployment.get("parameters") or {}
        assert set(params) <= set(inspect.signature(fn.fn).parameters), deployment["name"]
        assert set(changed(params, PARAMS[stage])) == {"out_dir"}, deployment["name"]
        # its metrics and report land beside its data, not over the DVC run's
        checked = validate_stage(stage, {**PARAMS[stage], **params}, files=False)
        out = params["out_dir"]
        assert checked["metrics_file"] == f"{out}/_metrics.json"
        assert checked["report_dir"] == f"{out}/_report"


@pytest.mark.parametrize("name", ["downstream.yaml", "downstream-diagnostic.yaml"])
def test_downstream_profiles_are_params_yaml_but_synthesis_size_and_downstream(name: str) -> None:
    """The 2,000-pair profiles say "every group but synthesize and downstream equals params.yaml"
    (so their ``dvc repro downstream`` reruns only those two stages on the default's heads and
    prior): they drifted once, when params.yaml's heads and sweep changed and the profiles did not.
    """
    profile = yaml.safe_load((ROOT / "profiles" / name).read_text())
    assert sorted(k for k in PARAMS.keys() | profile.keys() if PARAMS.get(k) != profile.get(k)) == [
        "downstream",
        "synthesize",
    ]
    assert changed(profile["synthesize"], PARAMS["synthesize"]) == {
        "out_dir": "data/synthetic-2k",
        "num_samples": 2000,
        "metrics_file": "metrics/synthesis-2k.json",
        "report_dir": "reports/synthesis-2k",
    }


def test_runs_into_another_out_dir_keep_metrics_and_report_beside_their_data() -> None:
    d = PARAMS["synthesize"]
    same = validate_stage("synthesize", {**d, "out_dir": "./data/synthetic/"}, files=False)
    assert (same["metrics_file"], same["report_dir"]) == (d["metrics_file"], d["report_dir"])
    other = validate_stage("synthesize", {**d, "out_dir": "data/big"}, files=False)
    assert other["metrics_file"] == "data/big/_metrics.json"
    assert other["report_dir"] == "data/big/_report"
    chosen = {**d, "out_dir": "data/big", "metrics_file": "m.json", "report_dir": None}
    kept = validate_stage("synthesize", chosen, files=False)
    assert (kept["metrics_file"], kept["report_dir"]) == ("m.json", None)
    # DVC's declared outputs are params.yaml's paths: the default run still writes them
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["synthesize"]
    assert {"${synthesize.metrics_file}": {"cache": False}} in dvc["outs"]
    assert any("${synthesize.report_dir}" in entry for entry in dvc["outs"])


def test_choices_match_the_library() -> None:
    """The schemas' torch-free lists of choices and file names are the library's."""
    from dag_core import backbone, downstream, heads, prior, sampling, shards, sources
    from dag_core.configs import synthesis, types
    from dag_core.metrics import fid
    from dag_core.nyu import SPLITS
    from flows.schema import base, label_subset, models

    assert synthesis.SAMPLER_NAMES == tuple(sampling.SAMPLERS) == synthesis.Sampler.__args__
    assert types.DEPTH_DTYPES == shards.DEPTH_DTYPES == types.DepthDtype.__args__
    assert label_subset.Source.__args__ == sources.SOURCE_KINDS
    assert label_subset.NyuSplit.__args__ == SPLITS
    assert base.Extractor.__args__ == fid.EXTRACTORS
    assert models.POINTER_FILE == backbone.POINTER_FILE
    assert models.HEADS_META == heads.META_FILE
    assert models.HEADS_WEIGHTS == heads.WEIGHTS_FILE
    assert models.PRIOR_META == prior.PRIOR_JSON
    assert models.DEPTH_NET_META == downstream.META_FILE
    assert models.DEPTH_NET_WEIGHTS == downstream.WEIGHTS_FILE
