"""One way to check settings: typed fields checked strictly by pydantic, one-line errors.

Every group of settings in the pipeline — the config dataclasses of :mod:`dag_core.configs` and
the per-stage params schemas of :mod:`flows.schema` — declares its fields with a type and its
constraints (``Annotated[int, Field(ge=1)]``, ``Literal["ddpm", "ddim"]``). Pydantic checks them
in strict mode (no ``"3"`` → 3, no ``true`` → 1, no 2.5 → 2; an int is a valid float) with
unknown keys forbidden, and :func:`param_error` turns a failure into ONE
:class:`~dag_core.errors.ParamError` that names the dotted key and the bad value::

    synthesize.steps=0: must be >= 1
    synthesize.guidance.w_dc=-1.0: must be >= 0
    unknown setting(s) runtime.devcie; expected some of: device, precision, ...

Checking never converts: a dataclass keeps the values it was given (an int stays an int), so the
records written from it (``asdict`` into shard metadata and model folders) do not change. Rules
between fields stay in each class's :meth:`Checked.check` and raise :class:`ParamError` too.

This module imports pydantic only (no torch), so a command line can check a whole params group
in well under a second, before any heavy import.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, fields
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from dag_core.errors import DagError, ParamError

#: The one pydantic configuration of every settings check: strict types, no unknown keys.
STRICT = ConfigDict(strict=True, extra="forbid")

_ORDER = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}
_TYPES = {
    "int_type": "expected an int",
    "int_parsing": "expected an int",
    "int_from_float": "expected an int",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "dataclass_type": "expected a mapping",
    "none_required": "expected null",
    "finite_number": "must be a finite number",
    "missing": "missing",
}
_ABSENT = object()


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _reason(error: Mapping[str, Any]) -> str:
    """A short reason for one pydantic error (``must be >= 1``, ``expected an int``)."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _ORDER:
        op, name = _ORDER[kind]
        return f"must be {op} {_number(ctx[name])}"
    if kind == "literal_error":
        return "expected one of " + str(ctx.get("expected", "")).replace(" or ", ", ")
    if kind == "multiple_of":
        return f"must be a multiple of {_number(ctx.get('multiple_of'))}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"takes at most {ctx.get('max_length')} item(s)"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind in _TYPES:
        return _TYPES[kind]
    msg = str(error.get("msg", kind))
    return msg[:1].lower() + msg[1:]


def _locate(data: Any, loc: Iterable[Any], missing: bool) -> tuple[str, Any]:
    """The dotted key (``.a.b[0]``) and the input value at a pydantic error location.

    Parts that are not keys of the input (pydantic's union-member tags such as ``int``) are
    skipped, so a key names a place in the user's params, never a type.
    """
    key, value = "", data
    parts = list(loc)
    for i, part in enumerate(parts):
        if isinstance(value, Mapping) and part in value:
            key, value = f"{key}.{part}", value[part]
        elif isinstance(part, int) and isinstance(value, list | tuple) and 0 <= part < len(value):
            key, value = f"{key}[{part}]", value[part]
        elif missing and i == len(parts) - 1:
            key, value = f"{key}.{part}", _ABSENT
    return key, value


def param_error(
    exc: ValidationError,
    data: Any,
    prefix: str,
    *,
    noun: str = "setting",
    allowed: Iterable[str] = (),
) -> DagError:
    """THE conversion of a pydantic failure into one line naming the dotted key and its value.

    Args:
        exc: What pydantic raised.
        data: The input that was checked (values are quoted from it, as the user wrote them).
        prefix: The dotted key of ``data`` itself (``synthesize``, ``train_heads.config``).
        noun: What a key of ``data`` is called in the unknown-key message (``parameter``).
        allowed: The keys ``data`` may have, listed in the unknown-key message.

    Returns:
        A :class:`DagError` for unknown keys (all of them at once), else a :class:`ParamError`
        for the first bad value.
    """
    errors = exc.errors()
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        names = ", ".join(prefix + _locate(data, e["loc"], True)[0] for e in extra)
        expected = ", ".join(allowed)
        return DagError(
            f"unknown {noun}(s) {names}" + (f"; expected some of: {expected}" if expected else "")
        )
    first = errors[0]
    key, value = _locate(data, first["loc"], first["type"] == "missing")
    if value is _ABSENT:
        return DagError(f"{prefix}{key}: missing (every {noun} must be given)")
    inner = (first.get("ctx") or {}).get("error")
    if isinstance(inner, ParamError):  # a validator that names a place inside the value
        sub = inner.key if inner.key.startswith("[") else f".{inner.key}"
        return ParamError(prefix + key + sub, inner.value, inner.reason)
    return ParamError(prefix + key, value, _reason(first))


def validate_model(
    model: type[BaseModel], data: Any, prefix: str, *, noun: str = "setting"
) -> BaseModel:
    """``model.model_validate(data)``, failures as one :func:`param_error` line."""
    if not isinstance(data, Mapping):
        raise ParamError(prefix, data, f"expected a mapping of {noun}s")
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise param_error(exc, data, prefix, noun=noun, allowed=model.model_fields) from None


_ADAPTERS: dict[int, tuple[Any, TypeAdapter[Any]]] = {}


def check_value(annotation: Any, value: Any, key: str) -> Any:
    """Check one value against a type with constraints (``Annotated[int, Field(ge=0)]``),
    strictly; :class:`ParamError` naming ``key`` if it does not fit. Returns ``value``."""
    entry = _ADAPTERS.get(id(annotation))
    if entry is None:
        entry = _ADAPTERS[id(annotation)] = (annotation, TypeAdapter(annotation, config=STRICT))
    try:
        entry[1].validate_python(value)
    except ValidationError as exc:
        raise param_error(exc, value, key) from None
    return value


@functools.cache
def _fields_model(cls: type) -> type[BaseModel]:
    """A pydantic model of a dataclass's annotated fields (with their defaults)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    spec: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = ...
        spec[f.name] = (hints[f.name], default)
    return create_model(f"{cls.__name__}Fields", __config__=STRICT, **spec)


@functools.cache
def _tuple_fields(cls: type) -> frozenset[str]:
    """Fields whose type is a tuple (YAML gives lists; they are stored as tuples)."""
    hints = typing.get_type_hints(cls)
    return frozenset(
        f.name
        for f in fields(cls)
        if typing.get_origin(hints[f.name]) is tuple
        or any(typing.get_origin(a) is tuple for a in typing.get_args(hints[f.name]))
    )


class Checked:
    """Mixin for settings dataclasses: every field is checked on construction.

    A subclass declares its fields with types and constraints; construction checks them with
    :data:`STRICT` (lists given for tuple fields are stored as tuples, nothing else is
    converted) and then calls :meth:`check` for rules between fields. Errors name the field
    under :attr:`key` (``guidance.w_dc=-1: must be >= 0``); :meth:`from_params` builds an
    instance from a params mapping and names fields under the mapping's own dotted key.
    """

    #: The name fields are reported under when the class is constructed directly.
    key: ClassVar[str] = "settings"

    def __post_init__(self) -> None:
        cls = type(self)
        for name in _tuple_fields(cls):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        validate_model(_fields_model(cls), values, cls.key)
        self.check()

    def check(self) -> None:
        """Rules between fields; raise :class:`ParamError` keyed ``f"{self.key}.<field>"``."""

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | Self | None, key: str | None = None) -> Self:
        """Build from a params mapping (None = all defaults; an instance is returned as is).

        Args:
            params: The settings; keys are field names, missing ones take the defaults.
            key: The dotted key of the mapping in its params group, used in errors
                (default: the class's :attr:`key`).
        """
        where = key or cls.key
        if isinstance(params, cls):
            return params
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise ParamError(where, params, "expected a mapping of settings")
        tuples = _tuple_fields(cls)
        values = {
            k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in params.items()
        }
        validate_model(_fields_model(cls), values, where)
        try:
            return cls(**values)
        except ParamError as exc:
            raise exc.rebased(cls.key, where) from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Alias of :meth:`from_params` (the records in model folders are read with it)."""
        return cls.from_params(data)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON values (tuples as lists), in declaration order."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}  # type: ignore[call-overload]

    def _fail(self, name: str, reason: str) -> ParamError:
        """A :class:`ParamError` for field ``name`` of this instance."""
        return ParamError(f"{self.key}.{name}", getattr(self, name), reason)
