"""The machinery of the stage schemas: the base model, path markers and the file checks.

A stage's schema is a pydantic model (:class:`StageParams`) with one field per flow parameter,
typed and constrained, checked with :data:`dag_core.validation.STRICT`. Fields marked
:class:`Nested` hold a settings dataclass of :mod:`dag_core.configs` (checked by the class
itself, under the field's dotted key); fields marked :class:`Output` are paths the stage writes
(checked writable before anything runs). What a stage reads is listed by its
:meth:`StageParams.inputs` and checked present, of the right kind, and whole (shard datasets).
:func:`validate` is THE check of a stage's params. Nothing here imports torch or Prefect; the
shard reader (which needs torch) is imported only when an input folder actually holds shard
datasets, after every value has been checked.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field

from dag_core.configs.runtime import RuntimeSettings
from dag_core.depthnorm import DepthNorm
from dag_core.errors import ParamError
from dag_core.validation import STRICT, Checked, validate_model


@dataclass(frozen=True)
class Nested:
    """Marks a mapping parameter that holds the fields of a settings class."""

    cls: type[Checked]


@dataclass(frozen=True)
class Output:
    """Marks a path parameter the stage writes: a ``file`` or a ``dir``."""

    kind: Literal["file", "dir"]


@dataclass(frozen=True)
class In:
    """One input of a stage run, checked before it starts.

    Args:
        key: The parameter's dotted key (for errors).
        path: The path it names.
        kind: ``path`` (must exist), ``datasets`` (a folder whose shard datasets must all be
            whole, ``parts`` of them present), or ``dataset`` (one whole shard dataset).
        parts: Datasets a ``datasets`` folder must hold (``train``, ``heldout``).
        producer: The stage that writes it (named in the error when it is missing).
    """

    key: str
    path: str
    kind: Literal["path", "datasets", "dataset"] = "path"
    parts: tuple[str, ...] = ()
    producer: str | None = None


Text = Annotated[str, Field(min_length=1)]
#: a dataset card's ``license`` field: a Hugging Face Hub licence id (apache-2.0, cc-by-4.0...)
#: or ``other``
License = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.+-]*$")]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
OutDir = Annotated[Text, Output("dir")]
OutFile = Annotated[Text, Output("file")]
OptionalOutDir = Annotated[Text | None, Output("dir")]
OptionalOutFile = Annotated[Text | None, Output("file")]
Runtime = Annotated[dict[str, Any], Nested(RuntimeSettings)]
Norm = Annotated[dict[str, Any], Nested(DepthNorm)]
NBoot = Annotated[int, Field(ge=10)]
#: :data:`dag_core.metrics.fid.EXTRACTORS` (a test keeps them equal)
Extractor = Literal["auto", "inception-v3-compat", "inception-v3-fidhelper"]


class StageParams(BaseModel):
    """The params of one stage (one field per flow parameter; subclasses declare them).

    Hooks, each given the stage's params as a plain dict: :meth:`check` (rules between values),
    :meth:`resolve` (values that depend on others), :meth:`inputs` (what the run reads) and
    :meth:`check_models` (cheap compatibility of the model folders it reads).
    """

    model_config = STRICT
    stage: ClassVar[str]

    @classmethod
    def nested(cls) -> dict[str, type[Checked]]:
        """Parameter → the settings class its mapping holds."""
        return {
            name: meta.cls
            for name, info in cls.model_fields.items()
            for meta in info.metadata
            if isinstance(meta, Nested)
        }

    @classmethod
    def outputs(cls) -> dict[str, str]:
        """Parameter → ``file`` or ``dir``, for every path the stage writes."""
        return {
            name: meta.kind
            for name, info in cls.model_fields.items()
            for meta in info.metadata
            if isinstance(meta, Output)
        }

    @classmethod
    def key(cls, name: str) -> str:
        return f"{cls.stage}.{name}"

    @classmethod
    def check(cls, p: dict[str, Any]) -> None:
        """Rules between values (override)."""

    @classmethod
    def resolve(cls, p: dict[str, Any]) -> dict[str, Any]:
        """Values that depend on others, filled in (override; returns ``p``)."""
        return p

    @classmethod
    def inputs(cls, p: dict[str, Any]) -> Iterator[In]:
        """What the run reads (override)."""
        return iter(())

    @classmethod
    def check_models(cls, p: dict[str, Any]) -> None:
        """Cheap checks of the model folders the run reads and of what the run needs from its
        environment (override)."""


def check_writable(key: str, value: str | os.PathLike[str]) -> None:
    """ParamError unless ``value`` can be created or replaced: its nearest existing ancestor is
    a writable folder, and nothing in the way is a file where a folder is needed."""
    path = Path(value)
    probe = path if path.exists() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        if probe == path:  # the output itself exists as a file or other entry
            probe = path.parent
        else:
            raise ParamError(key, str(value), f"{probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ParamError(key, str(value), f"folder {probe} is not writable")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise ParamError(key, str(value), f"folder {path} is not writable")


def check_output(key: str, value: Any, kind: str) -> None:
    """One output path: writable, and not a folder where a file goes (or the reverse)."""
    if value is None:
        return
    path = Path(value)
    if kind == "file" and path.is_dir():
        raise ParamError(key, value, "is a folder, expected a file")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise ParamError(key, value, "is a file, expected a folder")
    check_writable(key, value)


def _has_shards(path: Path, depth: int) -> bool:
    """Whether ``path`` or a folder up to ``depth`` levels below holds shards or a manifest."""
    try:
        entries = list(path.iterdir())
    except OSError:
        return False
    if any(e.name == "_manifest.json" or e.name.startswith("part-") for e in entries):
        return True
    return depth > 0 and any(
        _has_shards(e, depth - 1) for e in entries if e.is_dir() and e.name[:1] not in "._"
    )


def check_input(item: In) -> None:
    """One input: present, of the right kind and (shard datasets) whole."""
    path = Path(item.path)
    hint = f" (run stage {item.producer} first)" if item.producer else ""
    if not path.exists():
        raise ParamError(item.key, item.path, f"not found{hint}")
    if item.kind == "path":
        return
    if not path.is_dir():
        raise ParamError(item.key, item.path, "is a file, expected a folder of shard datasets")
    depth = 0 if item.kind == "dataset" else 2
    if _has_shards(path, depth):
        from dag_core.shards import dataset_problems, find_datasets  # needs torch: only now

        for directory in find_datasets(path, max_depth=depth):
            problems = dataset_problems(directory)
            if problems:
                raise ParamError(item.key, item.path, problems[0])
    for part in item.parts:
        if not (path / part).is_dir():
            raise ParamError(item.key, item.path, f"has no '{part}' dataset{hint}")
    if not _has_shards(path, depth):
        raise ParamError(item.key, item.path, f"holds no shard dataset{hint}")


def dataset_rows(path: str | Path) -> int:
    """``total_rows`` of a whole dataset's manifest (checked by :func:`check_input` first)."""
    import json

    return int(json.loads((Path(path) / "_manifest.json").read_text())["total_rows"])


#: params whose files a command line checked just before starting the flow: the flow's own check
#: of the same params, next, does not hash the same datasets again (each mark is used once, so a
#: served deployment or a pipeline checks every run afresh)
_FILES_CHECKED: set[str] = set()


def validate(
    schema: type[StageParams],
    params: Mapping[str, Any],
    *,
    files: bool = True,
    mark: bool = False,
) -> dict[str, Any]:
    """Check a stage's whole params group; return it resolved, as a new deep copy.

    In order, each failure one :class:`~dag_core.errors.DagError` naming the dotted key and its
    value: names and types of every parameter (strict; unknown and missing ones), the settings
    of every nested group (``guidance``, ``config``, ``runtime``, ...), rules between values,
    then every output path (writable; a file where a file goes). With ``files``: every input
    (present; shard datasets whole, checksums included) and the cheap model checks (model
    folders of the right kind, steps and τ within their schedules).

    Args:
        schema: The stage's schema (e.g. :class:`flows.schema.synthesize.SynthesizeParams`).
        params: Its params, complete (params.yaml's group with the run's changes).
        files: Also check inputs and models (off for a pipeline's up-front check, whose earlier
            stages write the later ones' inputs).
        mark: The flow is started next in this process with the returned params: its own
            check skips the files checked here.

    Returns:
        The params with values that depend on others filled in (e.g. ``synthesize``'s metrics
        and report beside a non-default ``out_dir``).
    """
    stage = schema.stage
    p = copy.deepcopy(dict(params))
    validate_model(schema, p, stage, noun="parameter")
    for name, cls in schema.nested().items():
        cls.from_params(p[name], schema.key(name))
    schema.check(p)
    p = schema.resolve(p)
    for name, kind in schema.outputs().items():
        check_output(schema.key(name), p[name], kind)
    if files:
        digest = f"{stage}:{json.dumps(p, sort_keys=True, default=str)}"
        if digest in _FILES_CHECKED:
            _FILES_CHECKED.discard(digest)
        else:
            for item in schema.inputs(p):
                check_input(item)
            schema.check_models(p)
            if mark:
                _FILES_CHECKED.add(digest)
    return copy.deepcopy(p)
