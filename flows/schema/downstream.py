"""Stage ``downstream``'s params schema (:mod:`flows.downstream`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from dag_core.configs.downstream import DownstreamConfig, TrainingSet
from dag_core.errors import ParamError
from flows.schema import models
from flows.schema.base import (
    In,
    NBoot,
    Nested,
    Norm,
    OutDir,
    OutFile,
    PositiveInt,
    Runtime,
    StageParams,
    Text,
    dataset_rows,
)

#: a training set's name is a folder name under models_dir (``labelled+dag`` is fine)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+.-]*$")
Pair = Annotated[list[Text], Field(min_length=2, max_length=2)]


def train_set(name: str, value: str | dict[str, Any], where: str) -> TrainingSet:
    """A ``train_sets`` entry as a :class:`TrainingSet` (a bare path: its pairs alone)."""
    params = {"data": value} if isinstance(value, str) else value
    return TrainingSet.from_params(params, f"{where}.{name}")


def curve_sets(p: dict[str, Any]) -> dict[str, dict[int, str]]:
    """The AbsRel-vs-N curves: curve set → {N: the training set trained on its first N pairs}
    (``<set>@<N>``, or the set itself when N is all of its pairs)."""
    curve = p["curve"]
    if curve is None:
        return {}
    out: dict[str, dict[int, str]] = {}
    for name in curve["sets"]:
        ts = train_set(name, p["train_sets"][name], "downstream.train_sets")
        out[name] = {n: name if n == _size(ts) else f"{name}@{n}" for n in curve["n"]}
    return out


def _size(ts: TrainingSet) -> int | None:
    """The set's number of pairs when it is known cheaply (its limit, or its manifest's row
    count when nothing is dropped); None otherwise."""
    if ts.limit is not None:
        return ts.limit
    if ts.drop_uncertain == 0 and (Path(ts.data) / "_manifest.json").is_file():
        return dataset_rows(ts.data)
    return None


def expanded_sets(p: dict[str, Any]) -> dict[str, TrainingSet]:
    """Every training set the run trains: ``train_sets`` and the curves' ``<set>@<N>``."""
    sets = {
        name: train_set(name, value, "downstream.train_sets")
        for name, value in p["train_sets"].items()
    }
    for name, points in curve_sets(p).items():
        for n, derived in points.items():
            if derived not in sets:
                sets[derived] = TrainingSet(**{**sets[name].to_dict(), "limit": n})
    return sets


def branch_sources(sets: dict[str, TrainingSet]) -> dict[str, str]:
    """finetune set → the alone set of the same pairs (data, labels, limit, filter), whose run
    it shares up to the branch step (:mod:`dag_core.downstream.training`) and continues from."""
    alone = {
        (ts.data, ts.labels, ts.limit, ts.drop_uncertain): name
        for name, ts in reversed(sets.items())  # the first of equal sets wins
        if ts.regime == "alone"
    }
    return {
        name: alone[key]
        for name, ts in sets.items()
        if ts.regime == "finetune"
        and (key := (ts.data, ts.labels, ts.limit, ts.drop_uncertain)) in alone
    }


class DownstreamParams(StageParams):
    """The params of stage ``downstream``: the downstream depth networks.

    One field per parameter of :func:`flows.downstream.downstream` (described in params.yaml).
    """

    stage = "downstream"

    runtime: Runtime
    train_sets: Annotated[dict[str, Text | dict[str, Any]], Field(min_length=1)]
    labelled: Text | None
    validation: Text | None
    base_model: Text | None
    heads: Text | None
    estimator: Text | None
    world_test: Text
    nyu_path: Text | None
    nyu_median_scaling: bool
    comparisons: list[Pair]
    diagnostic: list[Text]
    curve: dict[str, list[Any]] | None
    n_boot: NBoot
    runs: PositiveInt
    workers: PositiveInt
    models_dir: OutDir
    norm: Norm
    config: Annotated[dict[str, Any], Nested(DownstreamConfig)]
    metrics_file: OutFile
    table_file: OutFile
    curve_dir: OutDir

    @classmethod
    def check(cls, p: dict[str, Any]) -> None:
        names = p["train_sets"]
        for name in names:
            if not _NAME.match(name):
                raise ParamError(
                    cls.key(f"train_sets.{name}"), name, "a set name must be a plain folder name"
                )
        sets = {n: train_set(n, v, cls.key("train_sets")) for n, v in names.items()}
        known = f"is not a train set ({', '.join(sets)})"
        for i, (a, b) in enumerate(p["comparisons"]):
            for value in (a, b):
                if value not in sets:
                    raise ParamError(cls.key(f"comparisons[{i}]"), value, known)
            if a == b:
                raise ParamError(cls.key(f"comparisons[{i}]"), [a, b], "compares a set with itself")
        for i, value in enumerate(p["diagnostic"]):
            if value not in sets:
                raise ParamError(cls.key(f"diagnostic[{i}]"), value, known)
        regimes = [n for n, ts in sets.items() if ts.needs_labelled]
        if regimes and p["labelled"] is None:
            users = ", ".join(regimes)
            raise ParamError(
                cls.key("labelled"), None, f"is needed by the finetune/mix set(s) {users}"
            )
        for kind, keys in (("heads", ("base_model", "heads")), ("reference", ("estimator",))):
            users = [n for n, ts in sets.items() if ts.labels == kind]
            for key in keys:
                if users and p[key] is None:
                    raise ParamError(cls.key(key), None, f"is needed by {', '.join(users)}")
        cls._check_curve(p, sets)

    @classmethod
    def _check_curve(cls, p: dict[str, Any], sets: dict[str, TrainingSet]) -> None:
        curve = p["curve"]
        if curve is None:
            return
        if set(curve) != {"sets", "n"}:
            raise ParamError(cls.key("curve"), curve, "expected {sets: [set names], n: [sizes]}")
        for i, name in enumerate(curve["sets"]):
            if name not in sets:
                raise ParamError(
                    cls.key(f"curve.sets[{i}]"), name, f"is not a train set ({', '.join(sets)})"
                )
            if sets[name].labels != "stored":
                raise ParamError(cls.key(f"curve.sets[{i}]"), name, "must use its stored labels")
        for i, n in enumerate(curve["n"]):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ParamError(cls.key(f"curve.n[{i}]"), n, "must be an int >= 1")
        if not curve["sets"] or not curve["n"]:
            raise ParamError(cls.key("curve"), curve, "needs at least one set and one n")

    @classmethod
    def inputs(cls, p: dict[str, Any]) -> Iterator[In]:
        sets = expanded_sets(p)
        for name in p["train_sets"]:
            yield In(cls.key(f"train_sets.{name}"), sets[name].data, "dataset")
        if p["labelled"] is not None and any(ts.needs_labelled for ts in sets.values()):
            yield In(cls.key("labelled"), p["labelled"], "dataset", (), "label_subset")
        if p["validation"] is not None:
            yield In(cls.key("validation"), p["validation"], "dataset", (), "label_subset")
        yield In(cls.key("world_test"), p["world_test"], "datasets", (), "reference")
        if p["nyu_path"] is not None:
            yield In(cls.key("nyu_path"), p["nyu_path"])

    @classmethod
    def check_models(cls, p: dict[str, Any]) -> None:
        sets = expanded_sets(p)
        labels = {ts.labels for ts in sets.values()}
        if "heads" in labels:
            models.base_model_timesteps(cls.key("base_model"), p["base_model"])
            models.heads_info(cls.key("heads"), p["heads"])
        if "reference" in labels:
            models.check_depth_net(cls.key("estimator"), p["estimator"])
        for name, ts in sets.items():
            if ts.limit is not None and ts.drop_uncertain == 0:
                rows = dataset_rows(ts.data)
                if ts.limit > rows:
                    key = cls.key("curve.n") if "@" in name else cls.key(f"train_sets.{name}.limit")
                    raise ParamError(key, ts.limit, f"exceeds the {rows} rows of {ts.data}")
