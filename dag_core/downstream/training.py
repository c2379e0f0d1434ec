"""Train the downstream depth network for a fixed budget, in one of three regimes.

Every training set gets the same network, steps, batch size and rules
(:class:`~dag_core.configs.downstream.DownstreamConfig`), so only the data differs. The regimes
(:class:`~dag_core.configs.downstream.TrainingSet`):

* ``alone`` — every batch from the set's own pairs (the paper's comparison: labelled vs unguided
  vs DAG pairs);
* ``finetune`` — the first steps from the set's pairs, the last ``finetune_fraction`` from the
  labelled pairs (pretrain on synthetic data, then fine-tune on the few real labels);
* ``mix`` — every batch holds ``mix_count`` labelled pairs and the rest from the set's pairs.

One one-cycle learning-rate schedule (AdamW) spans all the steps of a run. With a validation
set, the net is scored (mean AbsRel over its images) every ``validate_every`` steps and at the
last, and the best-scoring weights are kept: checkpoint choice on held-out labelled pairs,
never on the test split, with the same rule for every set.

A ``finetune`` run is, up to step ``steps − finetune_steps``, exactly the ``alone`` run of the
same pairs (same seed, batches, flips, schedule and validation steps). An ``alone`` run can save
its whole training state at that step (``branch_to``) and the ``finetune`` run start from it
(``branch_from``): the same bytes as training it from step 0, for only its last ``finetune_steps``.

Losses (``config.loss``), both on valid pixels only (:meth:`DepthNorm.valid`):

* ``l1_log`` — L1 between predicted and true depth in the normalised space of
  :class:`DepthNorm` (log-depth for the default ``log`` normalisation);
* ``silog``  — the scale-invariant log loss of Eigen et al. (2014) on depth in metres,
  ``sqrt(mean(g²) − λ·mean(g)²)`` with ``g = log d̂ − log d`` and λ = 0.85.
"""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dag_core.atomic import write_bytes_atomic
from dag_core.configs.downstream import DownstreamConfig
from dag_core.depthnet import DepthNet, seeded_depth_net
from dag_core.depthnorm import DepthNorm
from dag_core.downstream.data import pair_stream, square_pairs
from dag_core.errors import DagError
from dag_core.metrics.depth import DepthMetricAccumulator

SILOG_LAMBDA = 0.85


def depth_loss(pred: Tensor, depth: Tensor, norm: DepthNorm, kind: str) -> Tensor:
    """``kind`` loss of normalised predictions ``pred`` against metric ``depth`` (valid pixels)."""
    valid = DepthNorm.valid(depth)
    if not valid.any():
        return pred.sum() * 0.0
    if kind == "l1_log":
        target = norm.normalize(torch.where(valid, depth, torch.ones_like(depth)))
        return (pred - target)[valid].abs().mean()
    g = norm.denormalize(pred)[valid].log() - depth[valid].clamp(norm.min_depth, None).log()
    return (g.square().mean() - SILOG_LAMBDA * g.mean().square()).clamp_min(1e-12).sqrt()


def _dirs(value: Sequence[str | Path] | None, what: str) -> list[str | Path]:
    if isinstance(value, str | Path) or not value:
        raise DagError(f"{what} must be a non-empty list of directories, got {value!r}")
    return list(value)


def _batches(
    config: DownstreamConfig,
    data: Sequence[str | Path],
    regime: str,
    labelled: Sequence[str | Path] | None,
    limit: int | None,
    drop_uncertain: float,
    log: Callable[[str], None],
    start: int = 0,
) -> Iterator[dict[str, Tensor]]:
    """The regime's batches from step ``start`` (0, or a finetune run's branch step) to
    ``config.steps``, each ``{"image", "depth"}``."""
    size, seed = config.batch_size, config.seed
    own, n_own = pair_stream(data, config.resolution, seed, limit, drop_uncertain)
    if regime == "alone":
        log(f"depth net: {n_own} training samples from {len(data)} dir(s), {config.steps} steps")
        yield from _take(own(size), config.steps)
        return
    if regime not in ("finetune", "mix"):
        raise DagError(f"unknown regime {regime!r}; expected alone, finetune or mix")
    lab, n_lab = pair_stream(_dirs(labelled, "labelled"), config.resolution, seed)
    if regime == "finetune":
        tail = config.finetune_steps
        log(
            f"depth net: {config.steps - tail} steps on {n_own} samples, then {tail} on "
            f"{n_lab} labelled pairs"
        )
        yield from _take(own(size), config.steps - tail - start)
        yield from _take(lab(size), tail)
        return
    m = config.mix_count
    log(f"depth net: {m} of {n_lab} labelled + {size - m} of {n_own} pairs a batch")
    for a, b in _take(zip(lab(m), own(size - m), strict=False), config.steps):
        yield {k: torch.cat([a[k], b[k]]) for k in ("image", "depth")}


def _take(batches: Iterator[Any], n: int) -> Iterator[Any]:
    for _, batch in zip(range(n), batches, strict=False):
        yield batch


def branch_step(config: DownstreamConfig) -> int:
    """The last step a ``finetune`` run shares with the ``alone`` run of the same pairs."""
    return config.steps - config.finetune_steps


def _branch_key(
    data: Sequence[str | Path],
    config: DownstreamConfig,
    limit: int | None,
    drop_uncertain: float,
    validation: str | Path | None,
) -> dict[str, Any]:
    """What makes two runs identical up to the branch step (stored with the state, compared)."""
    return {
        "data": [str(d) for d in data],
        "config": config.to_dict(),
        "limit": limit,
        "drop_uncertain": drop_uncertain,
        "validation": None if validation is None else str(validation),
    }


def _load_branch(path: str | Path, key: dict[str, Any]) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise DagError(f"cannot read the branch state {path}: {exc}") from exc
    if state.get("key") != key:
        raise DagError(f"branch state {path} is from another run ({state.get('key')}), not {key}")
    return state


def _score(model: DepthNet, images: Tensor, depth: Tensor, norm: DepthNorm) -> float:
    """Mean AbsRel (per image, then averaged) of ``model`` on square validation pairs."""
    acc = DepthMetricAccumulator(max_depth=norm.max_depth)
    model.eval()
    with torch.no_grad():
        for start in range(0, images.shape[0], 64):
            pred = norm.denormalize(model(images[start : start + 64])).float()
            acc.update(pred.cpu(), depth[start : start + 64].cpu())
    model.train()
    return float(acc.compute()["abs_rel"])


def train_depth_net(
    data: Sequence[str | Path],
    config: DownstreamConfig,
    norm: DepthNorm,
    *,
    regime: str = "alone",
    labelled: Sequence[str | Path] | None = None,
    validation: str | Path | None = None,
    limit: int | None = None,
    drop_uncertain: float = 0.0,
    log: Callable[[str], None] = print,
    device: str | torch.device = "cpu",
    branch_to: str | Path | None = None,
    branch_from: str | Path | None = None,
) -> tuple[DepthNet, list[dict[str, float]]]:
    """Train a :class:`DepthNet` for exactly ``config.steps`` steps; deterministic in the seed.

    Args:
        data: Shard datasets of the set's own pairs (concatenated).
        config: Budget and rules, the same for every compared set.
        norm: Depth normalisation of the network's output.
        regime: ``alone``, ``finetune`` or ``mix`` (module docstring).
        labelled: The labelled pairs the ``finetune`` and ``mix`` regimes add.
        validation: Shard dataset for checkpoint choice (None: the last step's weights).
        limit: Use the first ``limit`` rows of ``data`` only.
        drop_uncertain: Drop this fraction of ``data``'s most uncertain rows
            (:class:`~dag_core.shards.ShardDataset`).
        log: Progress messages.
        device: Where to train.
        branch_to: ``alone`` runs: also save the whole training state after
            :func:`branch_step` to this file (for a ``finetune`` run of the same pairs).
        branch_from: ``finetune`` runs: start from that state (DagError unless it was saved
            by the ``alone`` run of the same data, config, limit, filter and validation set).

    Returns:
        The network (eval mode, CPU; the best validation weights when ``validation`` is given)
        and one log row per step, ``{"step", "loss"}``, plus ``val_abs_rel`` at scored steps
        (:func:`chosen_step` names the step whose weights were kept).
    """
    data = _dirs(data, "data")
    if branch_to is not None and regime != "alone":
        raise DagError(f"branch_to needs the alone regime, got {regime!r}")
    if branch_from is not None and regime != "finetune":
        raise DagError(f"branch_from needs the finetune regime, got {regime!r}")
    key = _branch_key(data, config, limit, drop_uncertain, validation)
    val = None
    if validation is not None:
        images, depth = square_pairs(validation, config.resolution)
        val = (images.to(device), depth.to(device))
    model = seeded_depth_net(config.channels, config.seed).to(device)
    flips = torch.Generator().manual_seed(config.seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.steps, pct_start=config.warmup_fraction
    )
    rows: list[dict[str, float]] = []
    best: tuple[float, dict[str, Tensor] | None] = (float("inf"), None)
    start = 0
    if branch_from is not None:
        state = _load_branch(branch_from, key)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        flips.set_state(state["flips"])
        rows, best = state["rows"], (state["best_score"], state["best"])
        start = len(rows)
        log(f"depth net: steps 1-{start} from the alone run's state ({branch_from})")
    model.train()
    every = max(1, config.steps // 10)
    batches = _batches(config, data, regime, labelled, limit, drop_uncertain, log, start)
    for step, batch in enumerate(batches, start=start + 1):
        image, depth = batch["image"], batch["depth"]
        flip = torch.rand(image.shape[0], generator=flips) < 0.5
        image = torch.where(flip[:, None, None, None], image.flip(-1), image)
        depth = torch.where(flip[:, None, None, None], depth.flip(-1), depth)
        image, depth = image.to(device), depth.to(device)
        loss = depth_loss(model(image), depth, norm, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        row: dict[str, float] = {"step": step, "loss": loss.item()}
        if val is not None and (step % config.validate_every == 0 or step == config.steps):
            row["val_abs_rel"] = _score(model, *val, norm)
            if row["val_abs_rel"] < best[0]:
                best = (row["val_abs_rel"], copy.deepcopy(model.state_dict()))
        rows.append(row)
        if step % every == 0 or step == config.steps:
            extra = f", validation AbsRel {row['val_abs_rel']:.4f}" if "val_abs_rel" in row else ""
            log(f"depth net step {step}/{config.steps}: {config.loss} {row['loss']:.4f}{extra}")
        if branch_to is not None and step == branch_step(config):
            state = {
                "key": key,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "flips": flips.get_state(),
                "rows": rows,
                "best_score": best[0],
                "best": best[1],
            }
            buffer = io.BytesIO()  # torch.save's own file errors name no errno nor file
            torch.save(state, buffer)
            write_bytes_atomic(branch_to, buffer.getvalue())
    if len(rows) != config.steps:
        raise DagError(f"training data ran out after {len(rows)} of {config.steps} steps")
    if best[1] is not None:
        model.load_state_dict(best[1])
    return model.cpu().eval(), rows


def chosen_step(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """The step whose weights :func:`train_depth_net` kept and its validation score:
    ``{"step", "val_abs_rel"}`` (the first best), or the last step without validation."""
    scored = [r for r in rows if "val_abs_rel" in r]
    if not scored:
        return {"step": rows[-1]["step"]} if rows else {}
    best = min(scored, key=lambda r: r["val_abs_rel"])
    return {"step": best["step"], "val_abs_rel": best["val_abs_rel"]}
