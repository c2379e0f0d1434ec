"""Compare synthetic variants: the dfid stage's metrics record (DAG paper §5).

:func:`load_scorer` computes the real set's features and loads the reference depth estimator
once; :func:`compare_variants` scores every variant (dFID, FID, KID, P/R, consistency, each with
a bootstrap CI), its paired difference to the reference variant (same seeds), and — given
held-out real pairs (:func:`read_floor`) — the floor real images reach at the same count and each
variant's headroom above it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dag_core.errors import DagError
from dag_core.metrics.effect import CONFIDENCE
from dag_core.metrics.fid import resolve_extractor
from dag_core.metrics.scorer import GeneratedSet, ProgressFactory, Scorer
from dag_core.shards import read_arrays


def load_scorer(
    real: str | Path,
    estimator: str | Path,
    extractor: str,
    batch_size: int,
    n_boot: int,
    device: torch.device | str | None = None,
    progress: ProgressFactory | None = None,
) -> Scorer:
    """The real image set's features and the dFID depth estimator, computed/loaded once
    (``progress``: the feature extractions' progress callbacks, :class:`Scorer`)."""
    return Scorer(
        read_arrays(real, depth=False)[0],
        estimator,
        extractor=resolve_extractor(extractor),
        batch_size=batch_size,
        n_boot=n_boot,
        device=device,
        progress=progress,
    )


def read_floor(floor: str | Path, n: int, stage: str) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` held-out real pairs of ``floor`` (images, depth labels); a one-line
    DagError when it holds fewer (FID's bias depends on the count, so the floor needs as many)."""
    rgb, depth = read_arrays(floor, n)
    if len(rgb) < n:
        raise DagError(f"{stage} floor {floor} has {len(rgb)} images, fewer than the {n} generated")
    assert depth is not None
    return rgb, depth


def compare_variants(
    score: Scorer,
    sets: Mapping[str, GeneratedSet],
    reference_variant: str | None,
    *,
    extractor: str,
    floor: str | None = None,
    floor_pairs: tuple[np.ndarray, np.ndarray] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The dfid stage's record: each variant's scores with CIs (``variants``), its paired
    difference to ``reference_variant`` with a verdict (``vs_<reference>``), and with
    ``floor_pairs`` (held-out real pairs from ``floor``, at least as many as each variant) the
    floor at the reference variant's count (``floor``) and each variant's gap above the floor at
    its own count (``headroom``). ``extractor`` is the resolved Inception extractor's name."""
    ref = sets.get(reference_variant) if reference_variant else None
    results: dict[str, Any] = {
        "extractor": extractor,
        "n_real": score.n_real,
        "n_boot": score.n_boot,
        "confidence": CONFIDENCE,
        "reference_variant": reference_variant if ref is not None else None,
        "variants": {},
        f"vs_{reference_variant}": {},
    }
    for variant, gen in sets.items():
        against = ref if ref is not None and variant != reference_variant else None
        row, diff = score.summary(gen, against)
        results["variants"][variant] = row
        if diff is not None:
            results[f"vs_{reference_variant}"][variant] = diff
        log(f"{variant}: {row} {diff or ''}")
    if not results[f"vs_{reference_variant}"]:
        del results[f"vs_{reference_variant}"]
    if floor_pairs is not None:
        floor_sets: dict[int, GeneratedSet] = {}
        results["headroom"] = {}
        for variant, gen in sets.items():
            if gen.n not in floor_sets:
                rgb, depth = floor_pairs
                floor_sets[gen.n] = score.features(rgb[: gen.n], depth[: gen.n])
            results["headroom"][variant] = score.gap(gen, floor_sets[gen.n])
        floor_n = (ref or next(iter(sets.values()))).n
        row, _ = score.summary(floor_sets[floor_n])
        results["floor"] = {"data": floor, **row}
        log(f"floor (held-out real, n={floor_n}): {row}; headroom {results['headroom']}")
    return results
