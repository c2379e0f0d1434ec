"""What one labeller of the labeller record is (:class:`LabellerSpec`), importable without torch.

:mod:`dag_core.labeller` fits and scores them (stage ``labellers``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dag_core.errors import DagError

KINDS = ("heads", "fit", "net")


@dataclass(frozen=True)
class LabellerSpec:
    """One labeller of the record.

    Args:
        kind: ``heads`` (a trained folder), ``fit`` (heads fitted here) or ``net`` (a depth net
            trained from scratch).
        heads: The heads folder (kind ``heads``: the stage's ``heads``).
        config: Overrides of the stage's head config (``fit``) or depth-net config (``net``).
        t: Timesteps d^S is averaged over (heads kinds; (0,): the clean image, as synthesis).
        draws: Noise draws per t > 0 (heads kinds).
    """

    kind: str
    heads: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    t: tuple[int, ...] = (0,)
    draws: int = 1

    @classmethod
    def parse(cls, name: str, value: Mapping[str, Any], heads: str) -> LabellerSpec:
        """A spec from its params entry: ``{heads: true}`` (the folder ``heads``), ``{fit:
        {...}}`` or ``{net: {...}}``, plus ``t`` / ``draws`` for heads kinds."""
        kinds = [k for k in KINDS if k in value]
        extra = sorted(set(value) - {*KINDS, "t", "draws"})
        if len(kinds) != 1 or extra:
            raise DagError(
                f"labeller {name!r} needs exactly one of {', '.join(KINDS)} (and t, draws), "
                f"got {sorted(value)}"
            )
        kind = kinds[0]
        t = tuple(int(x) for x in value.get("t", (0,)))
        draws = int(value.get("draws", 1))
        if kind == "net" and (t != (0,) or draws != 1):
            raise DagError(f"labeller {name!r}: t and draws apply to heads, not to a depth net")
        if not t or draws < 1 or min(t) < 0:
            raise DagError(f"labeller {name!r}: t must be timesteps >= 0 and draws >= 1")
        if kind == "heads":
            if value["heads"] is not True:
                raise DagError(f"labeller {name!r}: heads must be true, got {value['heads']!r}")
            return cls("heads", heads=heads, t=t, draws=draws)
        config = value[kind] or {}
        if not isinstance(config, Mapping):
            raise DagError(f"labeller {name!r}: {kind} must be a mapping of settings")
        return cls(kind, config=dict(config), t=t, draws=draws)

    @property
    def fitted(self) -> bool:
        """Whether the labeller is trained here (and so once per run)."""
        return self.kind != "heads"


def check_specs(specs: Mapping[str, LabellerSpec], names: Sequence[str], what: str) -> None:
    """DagError naming ``what`` when ``names`` lists a labeller ``specs`` does not define."""
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise DagError(f"{what} names unknown labeller(s) {unknown}; have {sorted(specs)}")
