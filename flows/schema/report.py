"""Stage ``report``'s params schema (:mod:`flows.report`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dag_core.errors import ParamError
from dag_core.filechecks import FileProblem, read_json_object
from dag_core.validation import STRICT
from flows.schema.base import In, OutFile, StageParams, Text

#: section → the stage that writes its metrics (named when the file is missing)
PRODUCERS = {
    "heads": "train_heads",
    "synthesis": "synthesize",
    "dfid": "dfid",
    "sweep": "sweep",
    "downstream": "downstream",
}
#: the section whose ``metrics`` is a folder (of CSVs); every other one names a JSON file
FOLDER_SECTIONS = ("sweep",)


class Section(BaseModel):
    """One section of the report: the metrics record it renders and the plots it points to."""

    model_config = STRICT

    metrics: Text
    plots: list[Text]


class ExtraSection(Section):
    """A further downstream record (e.g. a profile's larger run): its own section."""

    title: Text
    command: Text | None


class ReportParams(StageParams):
    """The params of stage ``report``: ``reports/results.md`` from the committed metrics.

    One field per parameter of :func:`flows.report.report` (described in params.yaml).
    """

    stage = "report"

    heads: Section
    synthesis: Section
    dfid: Section
    sweep: Section
    downstream: Section
    downstream_extra: list[ExtraSection]
    labellers: list[ExtraSection]
    out_file: OutFile

    @classmethod
    def sections(cls, p: dict[str, Any]) -> Iterator[tuple[str, str, str | None]]:
        """(dotted key of its ``metrics``, the path, the producing stage) of every section."""
        for name, stage in PRODUCERS.items():
            yield cls.key(f"{name}.metrics"), p[name]["metrics"], stage
        for i, extra in enumerate(p["downstream_extra"]):
            yield cls.key(f"downstream_extra[{i}].metrics"), extra["metrics"], None
        for i, record in enumerate(p["labellers"]):
            yield cls.key(f"labellers[{i}].metrics"), record["metrics"], "labellers"

    @classmethod
    def check(cls, p: dict[str, Any]) -> None:
        out = Path(p["out_file"]).resolve()
        for key, path, _ in cls.sections(p):
            if Path(path).resolve() == out:
                raise ParamError(cls.key("out_file"), p["out_file"], f"is also {key}")

    @classmethod
    def plots(cls, p: dict[str, Any]) -> Iterator[tuple[str, str]]:
        """(dotted key, path) of every plot or table a section cites."""
        named = [(name, p[name]) for name in PRODUCERS]
        named += [(f"downstream_extra[{i}]", e) for i, e in enumerate(p["downstream_extra"])]
        named += [(f"labellers[{i}]", e) for i, e in enumerate(p["labellers"])]
        for name, section in named:
            for i, plot in enumerate(section["plots"]):
                yield cls.key(f"{name}.plots[{i}]"), plot

    @classmethod
    def inputs(cls, p: dict[str, Any]) -> Iterator[In]:
        for key, path, stage in cls.sections(p):
            yield In(key, path, "path", (), stage)
        for key, path in cls.plots(p):  # the report must not cite a file that is not there
            yield In(key, path, "path")

    @classmethod
    def check_models(cls, p: dict[str, Any]) -> None:
        """Every metrics record is of the right kind, and each JSON one parses to an object
        (the reader's own check, :func:`dag_core.filechecks.read_json_object`)."""
        for key, path, _ in cls.sections(p):
            folder = any(key == cls.key(f"{s}.metrics") for s in FOLDER_SECTIONS)
            if folder and not Path(path).is_dir():
                raise ParamError(key, path, "is not a folder of CSVs")
            if not folder and not Path(path).is_file():
                raise ParamError(key, path, "is not a metrics file")
            if not folder:
                try:
                    read_json_object(path)
                except FileProblem as exc:
                    raise exc.param_error(key, path) from None
